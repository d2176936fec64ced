"""ConvLSTM layer: the fast layer computes the baseline cell's function (issue "The spine", item 4)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from kinetoscope.layers import ConvLSTM, ConvLSTMCell, native, reference_convlstm
from kinetoscope.models import create_model


def _outputs_and_gradients(layer: ConvLSTM, x: torch.Tensor, forward, input_grad: bool = True) -> list[torch.Tensor]:
    """Output, dL/dx (if ``input_grad``) and dL/dparameters for L = <output, fixed random tensor>."""
    layer.zero_grad()
    x = x.detach().clone().requires_grad_(input_grad)
    y = forward(x)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(7), dtype=y.dtype)
    (y * weights).sum().backward()
    return [y.detach()] + ([x.grad] if input_grad else []) + [p.grad for p in layer.parameters()]


def _plain_autograd_convlstm(layer: ConvLSTM, x: torch.Tensor) -> torch.Tensor:
    """Eq. 4.5-4.10 written with autograd ops only, separate input/hidden convolutions; any stride."""
    b, _, t, _, _ = x.shape
    pad = layer.kernel_size // 2
    x_gates = [torch.conv2d(x[:, :, s], layer.input_conv.weight, layer.input_conv.bias, layer.stride, pad)
               for s in range(t)]
    h = x.new_zeros(b, layer.hidden_channels, *x_gates[0].shape[2:])
    c = torch.zeros_like(h)
    outputs = []
    for step in range(t):
        i, f, g, o = (x_gates[step] + layer.hidden_conv(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=2)


def test_the_fused_cell_kernel_builds_on_this_machine():
    # CI machines have a C compiler; without one the layer would silently take its slower path.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    assert native.cell_kernel(torch.float32, torch.device("cpu")) is not None
    assert native.cell_kernel(torch.float64, torch.device("cpu")) is not None
    assert native.cell_kernel(torch.float16, torch.device("cpu")) is None


@pytest.mark.parametrize("native_cell", [True, False], ids=["fused-kernel", "torch-ops"])
@pytest.mark.parametrize("input_grad", [True, False], ids=["dx", "no-dx"])
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("hidden_bias", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5, 8, 9), (1, 1, 1, 6, 6), (3, 4, 4, 5, 7)])
def test_layer_matches_the_baseline_cell_in_outputs_and_gradients_float64(
    kernel_size, hidden_bias, shape, input_grad, native_cell
):
    torch.manual_seed(0)
    layer = ConvLSTM(shape[1], 4, kernel_size, hidden_bias=hidden_bias, native=native_cell).double()
    x = torch.randn(*shape, dtype=torch.float64)
    fast = _outputs_and_gradients(layer, x, layer, input_grad)
    baseline = _outputs_and_gradients(layer, x, lambda v: reference_convlstm(layer, v), input_grad)
    assert fast[0].shape == (shape[0], 4, shape[2], shape[3], shape[4])
    for got, want in zip(fast, baseline, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("native_cell", [True, False], ids=["fused-kernel", "torch-ops"])
def test_layer_matches_the_baseline_cell_in_float32_at_model_size(native_cell):
    torch.manual_seed(1)
    layer = ConvLSTM(16, 16, 3, native=native_cell)
    x = torch.randn(2, 16, 6, 16, 16)
    fast = _outputs_and_gradients(layer, x, layer)
    baseline = _outputs_and_gradients(layer, x, lambda v: reference_convlstm(layer, v))
    for got, want in zip(fast, baseline, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("native_cell", [True, False], ids=["fused-kernel", "torch-ops"])
@pytest.mark.parametrize("size", [(8, 8), (9, 7)])
def test_strided_layer_keeps_the_state_at_the_strided_resolution_and_matches_autograd(size, native_cell):
    torch.manual_seed(2)
    layer = ConvLSTM(2, 3, 3, stride=2, native=native_cell).double()
    x = torch.randn(2, 2, 4, *size, dtype=torch.float64)
    fast = _outputs_and_gradients(layer, x, layer)
    plain = _outputs_and_gradients(layer, x, lambda v: _plain_autograd_convlstm(layer, v))
    assert fast[0].shape == (2, 3, 4, (size[0] + 1) // 2, (size[1] + 1) // 2)
    for got, want in zip(fast, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_baseline_is_the_cell_stepped_with_concatenated_weights_and_summed_biases():
    torch.manual_seed(3)
    layer = ConvLSTM(2, 3, 3).double()
    cell = ConvLSTMCell(2, 3, 3).double()
    with torch.no_grad():
        cell.conv.weight.copy_(torch.cat([layer.input_conv.weight, layer.hidden_conv.weight], dim=1))
        cell.conv.bias.copy_(layer.input_conv.bias + layer.hidden_conv.bias)
    x = torch.randn(1, 2, 3, 5, 5, dtype=torch.float64)
    h = c = torch.zeros(1, 3, 5, 5, dtype=torch.float64)
    for step in range(3):
        h, c = cell(x[:, :, step], (h, c))
    torch.testing.assert_close(reference_convlstm(layer, x)[:, :, -1], h)


def test_first_step_matches_eq_4_5_to_4_10_by_hand():
    # One pixel, 1x1 kernel: gates are scalars, so S_0 = i g and H_0 = o tanh(S_0) with zero states.
    layer = ConvLSTM(1, 1, 1).double()
    with torch.no_grad():
        layer.input_conv.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1))
        layer.input_conv.bias.zero_()
        layer.hidden_conv.weight.zero_()
        layer.hidden_conv.bias.zero_()
    x = torch.full((1, 1, 1, 1, 1), 0.5, dtype=torch.float64)
    i, g, o = torch.sigmoid(torch.tensor(0.5)), torch.tanh(torch.tensor(1.5)), torch.sigmoid(torch.tensor(2.0))
    expected = o * torch.tanh(i * g)
    torch.testing.assert_close(layer(x).flatten()[0].float(), expected.float())


def test_state_dict_keys_and_model_parameter_counts_are_unchanged():
    layer = ConvLSTM(1, 16)
    assert sorted(layer.state_dict()) == [
        "hidden_conv.bias", "hidden_conv.weight", "input_conv.bias", "input_conv.weight"
    ]
    assert sorted(ConvLSTM(1, 16, hidden_bias=False).state_dict()) == [
        "hidden_conv.weight", "input_conv.bias", "input_conv.weight"
    ]
    for hidden, params in [(1, 571), (48, 433_253)]:
        model = create_model("convlstm", num_classes=5, in_channels=1, hidden=hidden)
        assert sum(p.numel() for p in model.parameters()) == params


def test_model_trains_through_the_fast_layer_and_forward_hooks_see_hidden_states():
    torch.manual_seed(4)
    model = create_model("convlstm", num_classes=5, in_channels=1, hidden=2)
    seen = {}
    layer = model.get_submodule(model.explain_layer)
    layer.register_forward_hook(lambda module, inputs, output: seen.setdefault("h", output))
    logits = model(torch.randn(2, 1, 4, 64, 64))
    logits.sum().backward()
    assert logits.shape == (2, 5)
    assert seen["h"].shape == (2, 2, 4, 16, 16)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_wrong_input_channels_are_rejected_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"expected input \[B, 3, T, H, W\]"):
        ConvLSTM(3, 4)(torch.zeros(1, 2, 3, 8, 8))


def test_backward_twice_with_retained_graph_gives_the_same_gradients():
    # Explanation methods take several gradients of one forward pass (retain_graph=True).
    torch.manual_seed(5)
    layer = ConvLSTM(2, 3).double()
    x = torch.randn(1, 2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    y = layer(x).sum()
    first = torch.autograd.grad(y, x, retain_graph=True)[0]
    second = torch.autograd.grad(y, x)[0]
    torch.testing.assert_close(first, second)


def test_inference_without_autograd_gives_the_training_output():
    torch.manual_seed(6)
    layer = ConvLSTM(2, 3)
    x = torch.randn(2, 2, 3, 6, 6)
    with torch.no_grad():
        inference = layer(x)
    torch.testing.assert_close(inference, layer(x).detach())



def test_kernel_gradient_accepts_expanded_and_transposed_output_gradients():
    # y.sum() sends an expanded (stride-0) gradient; y.mean(1) a broadcast one: the kernel reads strides.
    torch.manual_seed(8)
    layer = ConvLSTM(2, 3).double()
    x = torch.randn(2, 2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    for reduce in (lambda y: y.sum(), lambda y: (y.mean(1) * torch.arange(6.0, dtype=y.dtype)).sum()):
        fast = torch.autograd.grad(reduce(layer(x)), x)[0]
        want = torch.autograd.grad(reduce(reference_convlstm(layer, x)), x)[0]
        torch.testing.assert_close(fast, want, rtol=1e-10, atol=1e-12)


def test_kernel_propagates_nan_inputs_instead_of_hiding_them():
    # A NaN must reach the loss so training can stop on it (the kernel must not assume finite math).
    layer = ConvLSTM(1, 2)
    x = torch.zeros(1, 1, 3, 4, 4)
    x[0, 0, 1, 2, 2] = float("nan")
    assert torch.isnan(layer(x)[:, :, 1:]).any()


def _assert_layer_matches_reference(seed: int) -> None:
    torch.manual_seed(seed)
    layer = ConvLSTM(2, 3).double()
    x = torch.randn(1, 2, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_convlstm(layer, x))


def test_kernel_is_built_once_into_the_cache_and_a_broken_compiler_falls_back(tmp_path, monkeypatch, caplog):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    monkeypatch.setenv("KINETOSCOPE_CACHE", str(tmp_path))
    built = native._build("cc")
    assert built.parent == tmp_path / "native" and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    assert native._build("cc") == built and built.stat().st_mtime_ns == stamp  # reused, not rebuilt
    # the library and its digest, no temporary left behind
    assert sorted(p.name for p in built.parent.iterdir()) == sorted([built.name, built.with_suffix(".sha256").name])

    locked = tmp_path / "locked"  # a cache that cannot be written (simulated: root ignores permissions)
    monkeypatch.setenv("KINETOSCOPE_CACHE", str(locked))
    real_access = os.access
    monkeypatch.setattr(native.os, "access", lambda p, mode: False if Path(p).is_relative_to(locked)
                        else real_access(p, mode))
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    elsewhere = native._build("cc")  # goes to a per-user temporary directory instead
    assert elsewhere.parent == tmp_path / "tmp" / f"kinetoscope-native-{os.getuid()}" and elsewhere.exists()
    monkeypatch.setattr(native.os, "access", real_access)

    monkeypatch.setenv("KINETOSCOPE_CACHE", str(tmp_path / "other"))
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    native._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="kinetoscope.layers.native"):
            assert native.cell_kernel(torch.float32, torch.device("cpu")) is None
        assert "pure-PyTorch path" in caplog.text
        _assert_layer_matches_reference(seed=9)
    finally:
        native._library.cache_clear()


def test_a_damaged_kernel_in_the_cache_is_rebuilt(tmp_path, monkeypatch):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    monkeypatch.setenv("KINETOSCOPE_CACHE", str(tmp_path))
    built = native._build("cc")
    # truncated, as after a full disk: dlopen of such a file can die of SIGBUS, so the digest catches it
    built.write_bytes(built.read_bytes()[:20000])
    native._library.cache_clear()
    try:
        assert native.cell_kernel(torch.float64, torch.device("cpu")) is not None
        assert built.stat().st_size > 1000
        _assert_layer_matches_reference(seed=10)
    finally:
        native._library.cache_clear()


def test_loading_the_kernel_keeps_subnormal_floats():
    # A -ffast-math shared library would switch the process to flush-to-zero when loaded.
    assert native.cell_kernel(torch.float32, torch.device("cpu")) is not None or shutil.which("cc") is None
    assert 5e-324 * 1.0 > 0.0
    assert (torch.tensor([1e-40]) * 1.0).item() > 0.0


def test_saturated_gates_keep_their_tail_values_in_float32():
    # sigmoid(-20) = 2.06e-9 must not round to 0 (it would if computed as 0.5 + 0.5 tanh(x / 2)).
    layer = ConvLSTM(1, 1, 1)
    with torch.no_grad():
        layer.input_conv.weight.copy_(torch.tensor([-20.0, 0.0, 1.0, 5.0]).view(4, 1, 1, 1))
        layer.input_conv.bias.zero_()
        layer.hidden_conv.weight.zero_()
        layer.hidden_conv.bias.zero_()
    x = torch.ones(1, 1, 2, 1, 1, requires_grad=True)
    fast = layer(x)
    want = reference_convlstm(layer, x)
    assert want.flatten()[0] > 1e-9
    torch.testing.assert_close(fast, want, rtol=1e-5, atol=0)
    grad_fast = torch.autograd.grad(fast.sum(), layer.input_conv.weight)[0]
    grad_want = torch.autograd.grad(want.sum(), layer.input_conv.weight)[0]
    torch.testing.assert_close(grad_fast, grad_want, rtol=1e-4, atol=0)


def test_output_gradient_in_any_layout_and_in_place_use_of_the_output():
    torch.manual_seed(11)
    layer = ConvLSTM(3, 4).double()
    x = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 4, 5, 7, 6, dtype=torch.float64)
    for forward in (layer, lambda v: reference_convlstm(layer, v)):
        y = forward(x).transpose(-1, -2)  # H and W swapped: the gradient's H and W do not collapse
        (y * weights).sum().backward()
    grads = x.grad.clone()
    x.grad = None
    (reference_convlstm(layer, x).transpose(-1, -2) * weights).sum().backward()
    torch.testing.assert_close(grads, 2 * x.grad, rtol=1e-10, atol=1e-12)
    y = layer(x)
    torch.nn.functional.relu(y, inplace=True).sum().backward()  # allowed on the layer's output


def test_a_cache_directory_others_can_write_to_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could plant a library here
    with pytest.raises(PermissionError, match="writable by others"):
        native._private_dir(shared)
    assert native._private_dir(tmp_path / "mine").stat().st_mode & 0o777 == 0o700


def test_frozen_weights_with_trainable_biases_get_the_reference_bias_gradients():
    # Head-style fine-tuning: only some parameters train; backward skips what nobody asked for.
    torch.manual_seed(12)
    layer = ConvLSTM(2, 3).double()
    layer.input_conv.weight.requires_grad_(False)
    layer.hidden_conv.weight.requires_grad_(False)
    x = torch.randn(2, 2, 4, 5, 5, dtype=torch.float64)
    biases = [layer.input_conv.bias, layer.hidden_conv.bias]
    fast = torch.autograd.grad(layer(x).pow(2).sum(), biases)
    want = torch.autograd.grad(reference_convlstm(layer, x).pow(2).sum(), biases)
    for got, expected in zip(fast, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
