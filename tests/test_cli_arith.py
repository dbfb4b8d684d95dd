"""``cnncli conv-arith`` end to end through `cnncli.cli.app.main`: every form, JSON keys,
exit codes (2 usage, 1 user error), stdout/stderr split, and no colour when piped."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from cnncli.arith import zoo
from cnncli.cli.app import main

ANSI = re.compile(r"\x1b\[")


def run(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``cnncli ARGS`` in-process; return (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def arith(args: str, capsys) -> tuple[int, str, str]:
    return run(["conv-arith", *args.split()], capsys)


# --- Quick form ------------------------------------------------------------------------


def test_quick_form_prints_size_then_formula(capsys):
    code, out, err = arith("224 -k 7 -s 2 -p 3", capsys)
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert lines[0] == "112"
    assert lines[1] == "floor((224 + 3 + 3 - 1*(7-1) - 1) / 2) + 1 = 112"
    assert "transpose: tconv k=7, s=2, p=3, output_padding=1 maps 112 back to 224" in lines
    assert any("is not an integer" in line and "all of them padding" in line for line in lines)


@pytest.mark.parametrize("pad", ["1,2", "1-2"])
def test_quick_form_uneven_padding(pad, capsys):
    code, out, _ = arith(f"10 -k 3 -p {pad}", capsys)
    assert code == 0 and out.splitlines()[:2] == ["11", "floor((10 + 1 + 2 - 1*(3-1) - 1) / 1) + 1 = 11"]


def test_quick_form_same_shows_real_pads(capsys):
    _, out, _ = arith("224 -k 7 -s 2 -p same", capsys)
    assert out.splitlines()[1] == "floor((224 + 2 + 3 - 1*(7-1) - 1) / 2) + 1 = 112"
    assert "lo = 5//2 = 2, hi = 3" in out


def test_quick_form_dilation(capsys):
    _, out, _ = arith("7 -k 3 -d 2", capsys)
    assert out.splitlines()[0] == "3" and "the kernel spans d*(k-1) + 1 = 5 pixels" in out


def test_quick_transpose_and_pool(capsys):
    _, out, _ = arith("112 -k 7 -s 2 -p 3 --transpose --output-padding 1", capsys)
    assert out.splitlines()[:2] == ["224", "(112 - 1)*2 - 3 - 3 + 1*(7-1) + 1 + 1 = 224"]
    _, out, _ = arith("56 -k 3 -s 2 --pool --ceil", capsys)
    assert out.splitlines()[:2] == ["28", "ceil((56 + 0 + 0 - 1*(3-1) - 1) / 2) + 1 = 28"]
    _, out, _ = arith("56 -k 2 --pool", capsys)
    assert out.splitlines()[0] == "28"  # a pool's stride defaults to its kernel


@pytest.mark.parametrize("convention", ["torch", "flax"])
def test_convention_explains_both(convention, capsys):
    _, out, _ = arith(f"112 -k 4 -s 2 -p 1 --transpose --convention {convention}", capsys)
    assert "nn.ConvTranspose1d(cin, cout, kernel_size=4, stride=2, padding=1, output_padding=0, dilation=1)" in out
    assert "nnx.ConvTranspose(cin, cout, kernel_size=(4,), strides=(2,), padding=((2, 2),), kernel_dilation=(1,))" in out
    assert out.splitlines()[-3].startswith(f"{convention}: ")
    assert "difference: PyTorch's padding is the padding of the direct conv being transposed" in out


def test_quick_json_keys(capsys):
    code, out, err = arith("224 -k 7 -s 2 -p 3 --json", capsys)
    data = json.loads(out)
    assert code == 0 and out.count("\n") == 1 and err == ""
    assert set(data) == {
        "kind", "input", "output", "kernel", "stride", "padding", "dilation", "formula", "notes", "transpose_output_padding",
    }  # fmt: skip
    assert (data["output"], data["padding"], data["transpose_output_padding"]) == (112, [3, 3], 1)


def test_quick_warning_goes_to_stderr(capsys):
    code, out, err = arith("7 -k 2 -s 2", capsys)
    assert code == 0 and out.splitlines()[0] == "3"
    assert err.startswith("warning: the last 1 input pixel(s) are never read")


# --- Stacks, architectures, recipes ----------------------------------------------------


def test_stack_table(capsys):
    tokens = "conv:c=6,k=5,p=2 tanh avgpool:k=2 conv:c=16,k=5 tanh avgpool:k=2 flatten dense:c=120 dense:c=84 dense:c=10"
    code, out, err = arith(f"28x28x1 {tokens}", capsys)
    assert code == 0 and err == ""
    assert "input 28x28x1" in out and "MACs: multiply-accumulates of conv and dense layers" in out
    row = next(line for line in out.splitlines() if "conv2" in line)
    assert "10x10x16" in row and "2.42K" in row
    assert re.search(r"total\s+│\s+10\s+│.*61\.7K", out)


def test_arch_json_keys_and_totals(capsys):
    code, out, _ = arith("224x224x3 --arch resnet50 --json", capsys)
    data = json.loads(out)
    assert code == 0
    assert list(data) == ["input", "layers", "output", "total", "convention"]
    assert data["input"] == [224, 224, 3] and data["output"] == [1000]
    assert data["total"] == {"params": 25_557_032, "macs": 4_089_184_256, "flops": 8_178_368_512, "act_bytes": data["total"]["act_bytes"]}
    required = {"name", "kind", "token", "input", "output", "params", "macs", "flops", "rf", "jump", "act_bytes", "warnings"}
    for layer in data["layers"]:
        assert required <= set(layer)
        assert isinstance(layer["output"], list) and len(layer["rf"]) == 2 == len(layer["jump"])
    block = data["layers"][4]
    assert block["name"] == "bottleneck1" and block["children"][-2]["name"] == "bottleneck1.proj"


def test_arch_default_input_and_classes(capsys):
    _, out, _ = arith("--arch lenet5 --classes 3 --json", capsys)
    data = json.loads(out)
    assert data["input"] == [28, 28, 1] and data["output"] == [3]


def test_arch_tokens(capsys):
    code, out, _ = arith("--arch lenet5 --tokens", capsys)
    assert code == 0 and out.split() == zoo.tokens("lenet5")
    _, out, _ = arith("--arch vgg11 --tokens --json", capsys)
    assert json.loads(out) == {"arch": "vgg11", "tokens": zoo.tokens("vgg11")}


def test_count_flags_change_flops_only(capsys):
    _, plain, _ = arith("8x8x1 conv:c=4,k=3 bn maxpool:k=2 --json", capsys)
    _, counted, _ = arith("8x8x1 conv:c=4,k=3 bn maxpool:k=2 --json --count-bias --count-norm --count-pool", capsys)
    plain, counted = json.loads(plain), json.loads(counted)
    assert counted["total"]["macs"] == plain["total"]["macs"]
    assert counted["total"]["flops"] > plain["total"]["flops"]
    assert "bias adds + norm ops + pool ops" in counted["convention"]


def test_stack_warnings_go_to_stderr(capsys):
    _, out, err = arith("7x7x3 maxpool:k=2 --json", capsys)
    json.loads(out)
    assert "warning: maxpool1: the last 1 input pixel(s) along axis 0 are never read" in err


def test_recipe_input_with_shape(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[data]\nsource = "digits"\n\n[model]\nlayers = ["conv:c=8,k=3,p=same", "relu", "gap", "dense"]\n\n'
        '[optimizer]\nname = "adam"\nlearning_rate = 0.01\n\n[train]\nepochs = 1\n'
    )
    code, out, err = run(["conv-arith", str(recipe), "--shape", "8x8x1", "--classes", "10", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["output"] == [10]


# --- Solve and draw --------------------------------------------------------------------


def test_solve(capsys):
    code, out, _ = arith("32 --solve 16", capsys)
    assert code == 0 and "k=3,s=2,p=1" in out and "more; --json lists all" in out
    assert "p=same with s=2 gives ceil(32/2) = 16 for any k" in out
    _, out, _ = arith("32 --solve 16 --json", capsys)
    dropping = [x for x in json.loads(out)["solutions"] if x["drops"]]
    assert {"k": 1, "s": 2, "p": 0, "d": 1, "op": 0, "drops": 16} in dropping
    _, out, _ = arith("16 --solve 32 --transpose --json", capsys)
    data = json.loads(out)
    assert data["solutions"][0] == {"k": 1, "s": 2, "p": 0, "d": 1, "op": 1, "drops": 0}


def test_draw_default_is_the_seed_example(capsys):
    code, out, _ = arith("--draw", capsys)
    assert code == 0 and "  4 3 4\n  2 4 3\n  2 3 4" in out
    _, out, _ = arith("--draw --json", capsys)
    assert json.loads(out)["output"] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]


def test_draw_values_stride_padding(capsys):
    code, out, _ = run(["conv-arith", "--draw", "--values", "1,2,3;4,5,6;7,8,9", "--kernel-values", "1,0;0,1", "-s", "2", "-p", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["output"] == [[1, 3], [7, 14]]


def test_draw_1d_matrix_forms(capsys):
    _, out, _ = arith("5 --draw -k 3 -p 0,2 --pad-mode circular", capsys)
    assert "circulant" in out and "  w2  0  0 w0 w1" in out
    _, out, _ = arith("3 --draw -k 3 -s 2 -p 1 --transpose --output-padding 1 --json", capsys)
    assert len(json.loads(out)["output"]) == 6


# --- Errors and exit codes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ("224x224x3 --arch resnet5", 1, "error: unknown architecture 'resnet5'; did you mean 'resnet56'?"),
        ("28x28x1 conv:c=8", 2, "error: layer 'conv:c=8': conv needs k="),
        ("3x3x1 conv:c=4,k=5", 1, "error: conv1 (conv:c=4,k=5), axis 0: kernel 5 is larger than the padded input 3"),
        ("224 -k 3 -p half", 2, "error: -p/--padding: 'half' is not a padding"),
        ("224x224x3 -k 3", 2, "error: -k belong to the quick form (a bare size like 224)"),
        ("224 conv:c=8,k=3", 2, "error: INPUT 224 is a bare size; a layer stack needs a channels-last shape"),
        ("224 -s 2", 2, "error: the quick form needs -k/--kernel"),
        ("abc", 2, "error: INPUT 'abc' is not a size, a shape or a recipe file"),
        ("28x28x1 flatten dense", 2, "error: dense1 (dense) has no width: no c= and no class count known"),
        ("224 -k 3 --convention keras", 2, "error: --convention: unknown value 'keras'"),
        ("--draw --values 1,2,3 --kernel-values 1,1;1,1", 2, "error: --kernel-values has 2 axes but the input has 1"),
        ("missing.toml", 1, "error: missing.toml"),
        ("224 -k 3 --bogus", 2, "No such option"),
    ],
)
def test_errors_and_exit_codes(args, code, message, capsys):
    got, out, err = arith(args, capsys)
    assert got == code
    assert message in err
    assert out == ""
    assert "Traceback" not in err


# --- Colour and help ------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stdout", _Tty())
    with pytest.raises(SystemExit):
        main(["conv-arith", "28x28x1", "conv:c=4,k=3"])
    assert ANSI.search(sys.stdout.getvalue())
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(sys, "stdout", _Tty())
    with pytest.raises(SystemExit):
        main(["conv-arith", "28x28x1", "conv:c=4,k=3"])
    assert not ANSI.search(sys.stdout.getvalue())


def test_no_ansi_when_piped():
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    proc = subprocess.run(
        [sys.executable, "-c", "from cnncli.cli.app import main; main()", "conv-arith", "7x7x3", "maxpool:k=2"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0
    assert "maxpool1" in proc.stdout and "warning:" in proc.stderr
    assert not ANSI.search(proc.stdout) and not ANSI.search(proc.stderr)


def test_help_teaches_with_examples(capsys):
    code, out, _ = arith("--help", capsys)
    assert code == 0
    for example in ("cnncli conv-arith 224 -k 7 -s 2 -p 3", "--arch resnet50", "--solve 16", "--draw"):
        assert example in out
