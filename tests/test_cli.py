"""`python -m ovi_core generate` end to end on the built-in demo model: files, exit codes, errors, interrupts."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ovi_core import cli
from ovi_core.mux import probe_mp4, read_mp4

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "A cat plays the piano. <AUDCAP>Piano music.<ENDAUDCAP>"
FRAME = 1 / 24


@pytest.fixture(autouse=True)
def no_configured_weights(monkeypatch):
    """The demo model runs when no weights are configured: make sure the environment configures none."""
    monkeypatch.delenv(cli.ENV_CKPT_DIR, raising=False)
    monkeypatch.delenv(cli.ENV_COMFY_MODELS, raising=False)


def run(*argv):
    return cli.main([str(a) for a in argv])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and (p.name.startswith(".") or "partial" in p.name))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The README's first command (default demo settings), run once and checked by several tests."""
    out = tmp_path_factory.mktemp("demo") / "demo_output" / "ovi_demo.mp4"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run("generate", "--prompt", PROMPT, "--out", out, "--no-progress")
    return code, out, stdout.getvalue(), stderr.getvalue()


def test_the_demo_command_writes_a_complete_mp4(demo_run):
    code, out, stdout, stderr = demo_run
    assert code == 0, stderr
    info = probe_mp4(out)
    assert (info.video_streams, info.audio_streams) == (1, 1)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.num_frames, info.width, info.height, info.fps) == (121, 64, 64, 24.0)
    assert abs(info.video_duration - 121 / 24) < 1e-6  # 5.042 s
    assert abs(info.audio_duration - info.video_duration) < FRAME  # audio (5.024 s) padded to the video
    assert leftovers(out.parent) == []


def test_the_demo_says_plainly_it_is_untrained(demo_run):
    _, out, stdout, stderr = demo_run
    assert "DEMO MODEL" in stderr and "untrained" in stderr
    assert f"wrote {out}" in stdout and "DEMO MODEL" in stdout
    assert (stdout + stderr).count("wrote ") == 1  # once, on stdout (not also through the log)
    assert "8 steps" in stderr  # the demo's lower default is stated
    assert "ignores" not in stderr  # no option was given that the demo cannot honour


def test_the_demo_banner_states_the_real_step_count_and_names_ignored_options(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert run("generate", "-p", PROMPT, "--steps", 1, "--out", out, "--no-progress", "--variant", "960x960_5s",
               "--dtype", "fp16", "--attention", "flash_attn", "--weight-dtype", "fp8_e4m3fn", "--vae-tile", "32x32") == 0
    err = capsys.readouterr().err
    assert "(64x64, 1 step)" in err and "8 steps" not in err
    ignored = [line for line in err.splitlines() if "the demo model ignores" in line]
    assert len(ignored) == 1
    for name in ("--variant 960x960_5s", "--dtype fp16", "--attention flash_attn", "--weight-dtype fp8_e4m3fn"):
        assert name in ignored[0]
    assert "--vae-tile" not in ignored[0]  # honoured: the demo decodes in tiles too
    assert probe_mp4(out).num_frames == 121


def test_a_seed_gives_the_same_frames_twice(tmp_path, capsys):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for out in (a, b):
        assert run("generate", "-p", PROMPT, "--seed", 11, "--steps", 2, "--out", out, "--no-progress", "-q") == 0
    (fa, wa, _), (fb, wb, _) = read_mp4(a), read_mp4(b)
    assert np.array_equal(fa, fb) and np.array_equal(wa, wb)
    assert f"{a}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, code, needle", [
    ([], 2, "required"),  # no prompt
    (["-p", PROMPT, "--steps", "0"], 2, "steps"),
    (["-p", PROMPT, "--video-guidance", "-1"], 2, "video_guidance"),
    (["-p", PROMPT, "--slg-layer", "11"], 2, "slg_layer"),  # the demo model has 3 blocks
    (["-p", " "], 2, "prompt is empty"),
    (["-p", PROMPT, "--out", "clip.avi"], 2, ".mp4"),
    (["-p", PROMPT, "--image", "missing.png"], 2, "missing.png does not exist"),
    (["--prompts", "missing.csv"], 2, "does not exist"),
    (["-p", PROMPT, "--ckpt-dir", "A", "--comfy-models", "B"], 2, "not both"),
    (["-p", PROMPT, "--demo", "--model", "x.safetensors"], 2, "--demo"),
])
def test_bad_arguments_give_one_line_errors_and_exit_2(tmp_path, capsys, monkeypatch, argv, code, needle):
    monkeypatch.chdir(tmp_path)
    assert run("generate", *argv) == code
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.mp4"))


def test_missing_weights_exit_3_naming_file_folder_and_source(tmp_path, capsys):
    (tmp_path / "ckpts" / "Ovi").mkdir(parents=True)
    assert run("generate", "-p", PROMPT, "--ckpt-dir", tmp_path / "ckpts", "--out", tmp_path / "x.mp4") == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Ovi weights not found") and len(err.splitlines()) == 1
    for needle in ("model.safetensors", str(tmp_path / "ckpts" / "Ovi"), "huggingface.co/chetwinlow1/Ovi",
                   "Wan2.2_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "Wan-AI/Wan2.2-TI2V-5B",
                   "v1-16.pth", "best_netG.pt", "hkchengrex/MMAudio"):
        assert needle in err
    assert run("generate", "-p", PROMPT, "--comfy-models", tmp_path) == 3
    err = capsys.readouterr().err
    assert "umt5_xxl_fp16.safetensors" in err and "wan2.2_vae.safetensors" in err
    assert run("generate", "-p", PROMPT, "--model", tmp_path / "model.safetensors") == 3
    err = capsys.readouterr().err
    assert "--text-encoder" in err and "--video-vae" in err
    assert not list(tmp_path.rglob("*.mp4"))


def test_environment_variable_points_at_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(cli.ENV_CKPT_DIR, str(tmp_path / "nowhere"))
    assert run("generate", "-p", PROMPT, "--out", tmp_path / "x.mp4") == 3
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


def test_check_weights(tmp_path, capsys):
    assert run("check-weights") == 0
    assert "demo model" in capsys.readouterr().out
    from ovi_core.demo import write_demo_checkpoints

    write_demo_checkpoints(tmp_path / "ckpts", "reference")
    assert run("check-weights", "--ckpt-dir", tmp_path / "ckpts") == 0
    out = capsys.readouterr().out
    assert "720x720_5s" in out and "Wan2.2_VAE.pth" in out and "best_netG.pt" in out
    assert out.count("  ok  ") == 5 and "BAD" not in out and "all weight files are usable" in out
    assert "Ovi fused model, 720x720_5s" in out and "a Wan2.2 video VAE" in out and "BigVGAN vocoder" in out
    assert run("check-weights", "--comfy-models", tmp_path / "ckpts") == 3


def test_a_batch_continues_past_failed_rows_and_exits_1(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from ovi_core.errors import OviError
    from ovi_core.pipeline import OviPipeline

    sample = OviPipeline._sample

    def failing_second_row(self, model, row, *args):
        if row.index == 1:
            raise OviError("the sampling diverged (simulated)")
        return sample(self, model, row, *args)

    monkeypatch.setattr(OviPipeline, "_sample", failing_second_row)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pngs").mkdir()
    Image.fromarray((np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)).save(tmp_path / "pngs" / "0.png")
    (tmp_path / "prompts.csv").write_text(
        "text_prompt,image_path\n"
        f'"{PROMPT}",\n'
        f'"{PROMPT}",\n'
        f'"A dog, barking. Audio: barking",pngs/0.png\n'
        '"",\n')  # a blank row: skipped
    code = run("generate", "--prompts", "prompts.csv", "--out-dir", "clips", "--steps", 1, "--seed", 3, "--no-progress")
    captured = capsys.readouterr()
    assert code == 1
    written = sorted(p.name for p in (tmp_path / "clips").glob("*.mp4"))
    assert written == ["1_A_cat_plays_the_piano_Piano_music_3.mp4", "3_A_dog_barking_Audio_barking_3.mp4"]
    assert "row 2 (line 3) failed: the sampling diverged (simulated)" in captured.err
    assert "2 of 3 clips written" in captured.out and "failed: row 2 (line 3)" in captured.out
    assert probe_mp4(tmp_path / "clips" / written[1]).num_frames == 121
    assert leftovers(tmp_path / "clips") == []


def test_bad_rows_are_all_reported_before_anything_runs(tmp_path, capsys, monkeypatch):
    from ovi_core.pipeline import OviPipeline

    monkeypatch.setattr(OviPipeline, "_stages", lambda *a: pytest.fail("the pipeline ran"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.csv").write_text(
        "text_prompt,image_path\n"
        f'"{PROMPT}",\n'
        f'"{PROMPT}",pngs/missing.png\n'
        '"  ",pngs/also_missing.png\n')
    assert run("generate", "--prompts", "prompts.csv", "--out-dir", "clips") == 2
    err = capsys.readouterr().err
    assert "row 2 (line 3): image file pngs/missing.png does not exist" in err
    assert "row 3 (line 4): the prompt is empty" in err and "nothing was generated" in err
    assert not (tmp_path / "clips").exists() or not any((tmp_path / "clips").iterdir())


def test_prompts_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# my prompts\nfirst prompt\n\n  second prompt  \n")
    assert cli.read_prompts_file(txt) == [("line 2", "first prompt", None), ("line 4", "second prompt", None)]
    bad = tmp_path / "p.csv"
    bad.write_text("prompt\nhello\n")
    with pytest.raises(cli.OviInputError, match="text_prompt column"):
        cli.read_prompts_file(bad)
    tsv = tmp_path / "sub" / "p.tsv"
    tsv.parent.mkdir()
    (tmp_path / "sub" / "img.png").write_bytes(b"")
    tsv.write_text("text_prompt\timage_path\nhi\timg.png\n")
    assert cli.read_prompts_file(tsv) == [("row 1 (line 2)", "hi", tmp_path / "sub" / "img.png")]
    multi = tmp_path / "m.csv"
    multi.write_text('text_prompt\n"two\nlines"\n,\nlast\n')
    assert cli.read_prompts_file(multi) == [("row 1 (lines 2-3)", "two\nlines", None), ("row 2 (line 5)", "last", None)]


@pytest.mark.parametrize("stage, at", [("sample", 1), ("write", 60)])
def test_ctrl_c_leaves_no_partial_mp4(tmp_path, capsys, monkeypatch, stage, at):
    def interrupting(self, p):
        if p.stage == stage and p.done == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.ProgressBars, "__call__", interrupting)
    out = tmp_path / "clip.mp4"
    assert run("generate", "-p", PROMPT, "--steps", 2, "--out", out) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_process_leaves_no_partial_mp4(tmp_path, sig, code):
    env = {k: v for k, v in os.environ.items() if k not in (cli.ENV_CKPT_DIR, cli.ENV_COMFY_MODELS)}
    out = tmp_path / "clip.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "ovi_core", "generate", "-p", PROMPT, "--steps", "1000",
                             "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = bytearray()
    reader = threading.Thread(target=lambda: [err.extend(chunk) for chunk in iter(lambda: proc.stderr.read1(4096), b"")])
    reader.start()
    deadline = time.monotonic() + 120
    while b"sampling" not in err and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"sampling" in err, err.decode(errors="replace")
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == code
    reader.join(timeout=10)
    assert b"no partial file" in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_check_weights_reads_every_fused_value_unless_quick(tmp_path, capsys):
    # a download with one corrupt value has a valid header and keys: only reading the values finds it
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ovi_core.demo import write_demo_checkpoints

    write_demo_checkpoints(tmp_path / "ckpts", "reference")
    fused = tmp_path / "ckpts" / "Ovi" / "model.safetensors"
    with safe_open(str(fused), "pt") as f:
        meta = f.metadata()
    sd = load_file(str(fused))
    key = sorted(k for k in sd if k.endswith("ffn.0.weight"))[0]
    sd[key].view(-1)[3] = float("nan")
    save_file(sd, str(fused), metadata=meta)
    assert run("check-weights", "--ckpt-dir", tmp_path / "ckpts") == 3
    out = capsys.readouterr()
    assert f"tensor {key} contains NaN or infinite values" in out.out and "BAD" in out.out
    assert run("check-weights", "--quick", "--ckpt-dir", tmp_path / "ckpts") == 0
    assert "all weight files are usable" in capsys.readouterr().out
