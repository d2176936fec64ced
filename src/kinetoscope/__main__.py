from kinetoscope.cli import main

main()
