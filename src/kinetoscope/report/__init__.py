"""HTML reports (with plots) built from run and study directories; Rich tables for the terminal."""
