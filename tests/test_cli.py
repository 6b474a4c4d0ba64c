"""The command line: one command table, and `train` flags generated from TrainConfig (nothing is trained)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from minimind_v import cli
from minimind_v.datatools.texts import iter_texts
from minimind_v.train.config import TrainConfig, changes_on_resume, setting
from minimind_v.train.flags import MODEL_SHORTCUTS, add_train_arguments, config_from_args

BASE = ["train", "--stage", "vlm-sft", "--data", "a.parquet", "--out", "run"]


def parse_train(*extra):
    return cli.build_parser().parse_args([*BASE, *extra])


def config(*extra) -> TrainConfig:
    from minimind_v.train.flags import config_from_args
    return config_from_args(parse_train(*extra))


def test_every_command_is_in_the_table_the_docstring_and_help():
    names = ["demo", "train", "eval", "chat", "serve", "tokenizer", "data", "convert", "export", "merge", "emoji"]
    assert list(cli.COMMANDS) == names
    text = cli.build_parser().format_help()
    for name in names:
        assert f"minimind-v {name}" in cli.__doc__, name
        assert f"minimind-v {name}" in text and cli.COMMANDS[name].help.split()[0] in text, name


def test_every_command_parses_and_has_a_handler():
    p = cli.build_parser()
    argv = {"demo": ["demo"], "train": BASE, "eval": ["eval", "--model", "m", "--data", "d.parquet"],
            "chat": ["chat", "--model", "m"], "serve": ["serve", "--model", "m"],
            "tokenizer": ["tokenizer", "train", "--data", "t.txt", "--out", "tok"],
            "data": ["data", "synth", "--out", "d"], "convert": ["convert", "a.pth", "out"],
            "export": ["export", "--model", "m", "--to", "hf", "out"], "merge": ["merge", "adapter", "out"],
            "emoji": ["emoji", "train", "--data", "d"]}
    assert set(argv) == set(cli.COMMANDS)
    for name, args in argv.items():
        a = p.parse_args(args)
        assert a.command == name and callable(a.func), name
    data = {"check": ["f.parquet"], "convert": ["captions", "dir", "--out", "o.parquet"],
            "preview": ["f.parquet", "--out", "g.png"], "stats": ["f.parquet"]}
    for sub, args in data.items():
        assert callable(p.parse_args(["data", sub, *args]).func), sub
    assert callable(p.parse_args(["emoji", "probe", "run", "--data", "d"]).func)


def test_every_trainconfig_field_is_a_flag_with_help():
    p = cli.build_parser()
    train = p._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help text"
        if f.name == "model_overrides":
            assert "model_override" in dests
        else:
            assert f.name in dests, f"TrainConfig.{f.name} cannot be set from the command line"
    text = train.format_help()
    for f in dataclasses.fields(TrainConfig):
        if f.name != "model_overrides":
            assert "--" + f.name.replace("_", "-") in text


def test_defaults_match_the_dataclass():
    assert config() == TrainConfig(stage="vlm-sft", data=["a.parquet"], out="run")


def test_every_field_set_from_the_command_line_equals_the_config_built_directly():
    args = ["--from", "prev/model", "--preset", "minimind-3v", "--tokenizer", "tok", "--vision-encoder", "enc",
            "--hidden-size", "64", "--num-layers", "3", "--use-moe", "--model-override", "rope_theta=10000.0",
            "--model-override", "hidden_act=silu",
            "--epochs", "3", "--max-steps", "7", "--batch-size", "4", "--grad-accum", "2", "--lr", "1e-3",
            "--min-lr", "1e-5", "--warmup-steps", "5", "--weight-decay", "0.1", "--grad-clip", "0.5",
            "--max-length", "256", "--padding", "pack", "--trainable", "llm", "--unfreeze-vision",
            "--dtype", "fp32", "--device", "cpu", "--num-workers", "2", "--seed", "7", "--log-every", "3",
            "--save-every", "4", "--keep-last", "5", "--resume", "auto", "--logger", "wandb", "--max-bad-steps", "9",
            "--trace-rows", "--encoder-cache", "cache", "--augment", "0.5", "--think-block",
            "--control-tokens-in-text", "--lora-rank", "8", "--lora-alpha", "4", "--lora-dropout", "0.1",
            "--lora-targets", "attn", "--lora-projector", "freeze", "--no-progress", "--no-save-final", "--no-plot",
            "--eval-every", "5", "--eval-bench", "pope", "--eval-limit", "9", "--eval-bench-data", "pope.parquet"]
    want = TrainConfig(stage="vlm-sft", data=["a.parquet"], out="run", init_from="prev/model", preset="minimind-3v",
                       model_overrides={"rope_theta": 10000.0, "hidden_act": "silu", "hidden_size": 64,
                                        "num_hidden_layers": 3, "use_moe": True},
                       tokenizer="tok", vision_encoder="enc", epochs=3, max_steps=7, batch_size=4, grad_accum=2,
                       lr=1e-3, min_lr=1e-5, warmup_steps=5, weight_decay=0.1, grad_clip=0.5, max_length=256,
                       padding="pack", trainable="llm", unfreeze_vision=True, dtype="fp32", device="cpu",
                       num_workers=2, seed=7, log_every=3, save_every=4, keep_last=5, resume="auto", logger="wandb",
                       max_bad_steps=9, trace_rows=True, encoder_cache="cache", augment=0.5, think_block=True,
                       control_tokens_in_text=True, lora_rank=8, lora_alpha=4.0, lora_dropout=0.1, lora_targets="attn",
                       lora_projector="freeze", progress=False, save_final=False, plot=False,
                       eval_every=5, eval_bench="pope", eval_limit=9, eval_bench_data="pope.parquet")
    got = config(*args)
    assert got == want
    # and the test itself covers every field: each differs from its default
    default = TrainConfig(stage="llm-sft", data=[], out="")
    same = [f.name for f in dataclasses.fields(TrainConfig) if getattr(got, f.name) == getattr(default, f.name)]
    assert same == [], f"fields left at their default in this test: {same}"


def test_old_spellings_keep_working():
    assert config("--init-from", "m").init_from == config("--from", "m").init_from == "m"
    assert config("--no-progress").progress is False and config().progress is True
    assert config("--unfreeze-vision").unfreeze_vision is True
    assert set(MODEL_SHORTCUTS) == {"--hidden-size", "--num-layers", "--use-moe"}
    with pytest.raises(SystemExit):
        parse_train("--padding", "sideways")


def test_model_override_needs_field_equals_value():
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        config("--model-override", "hidden_size")


def test_iter_texts_reads_every_format(tmp_path):
    (tmp_path / "a.txt").write_text("one line\nanother\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "plain"}) + "\nnot json\n"
                                      + json.dumps({"conversations": [{"role": "user", "content": "hi"},
                                                                      {"from": "gpt", "value": "yo"}]}) + "\n")
    assert list(iter_texts([tmp_path / "a.txt", tmp_path / "b.jsonl"])) == ["one line\n", "another\n", "plain",
                                                                             "hi", "yo"]


def test_a_new_setting_is_one_edit_flag_help_bounds_and_resume_check():
    """A field added to TrainConfig (here by a subclass) is a `train` flag with its help, is bounded, and a
    change of it on resume is reported, with no edit anywhere else."""
    extended = dataclasses.make_dataclass(
        "Extended", [("new_knob", int, setting(3, help="a knob added later", group="schedule", resume=True,
                                                bounds=(0, 9)))], bases=(TrainConfig,))
    import argparse
    p = argparse.ArgumentParser()
    add_train_arguments(p, extended)
    assert "--new-knob" in p.format_help() and "a knob added later" in p.format_help()
    a = p.parse_args(["--stage", "vlm-sft", "--data", "a.parquet", "--out", "run", "--new-knob", "5"])
    cfg = config_from_args(a, extended)
    assert cfg.new_knob == 5
    saved = extended(stage="vlm-sft", data=["a.parquet"], out="run").to_json()
    assert changes_on_resume(saved, cfg) == ["new_knob: 3 -> 5"]
    with pytest.raises(ValueError, match="--new-knob 12: must be between 0 and 9"):
        config_from_args(p.parse_args(["--stage", "vlm-sft", "--data", "a", "--out", "r", "--new-knob", "12"]),
                         extended)


def test_resume_check_covers_exactly_the_fields_marked_resume():
    base = TrainConfig(stage="vlm-sft", data=["a.parquet"], out="run")
    saved = base.to_json()
    assert changes_on_resume(saved, dataclasses.replace(base, lr=1e-3)) == ["lr: None -> 0.001"]
    assert changes_on_resume(saved, dataclasses.replace(base, log_every=3, device="cpu")) == []


def test_out_of_bounds_and_non_finite_settings_are_refused_in_one_line():
    for args, msg in ((["--batch-size", "0"], "--batch-size 0: must be between 1"),
                      (["--lora-alpha", "nan"], "--lora-alpha nan: must be a finite number"),
                      (["--lr", "inf"], "--lr inf: must be a finite number"),
                      (["--lora-dropout", "1.5"], "--lora-dropout 1.5: must be between")):
        with pytest.raises(ValueError, match=msg):
            config(*args)
    with pytest.raises(ValueError, match="--epochs 0"):
        TrainConfig(stage="vlm-sft", data=["a"], out="r", epochs=0).check()


def test_help_imports_no_torch():
    """`minimind-v --help` and `train --help` import no torch: only the command being run has its parser
    filled, and its code is imported when it runs."""
    import subprocess
    import sys
    code = ("import sys\nfrom minimind_v import cli\n"
            "for argv in (['--help'], ['train', '--help'], ['--version']):\n"
            "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
