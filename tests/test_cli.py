"""The command line: one command table, and `train` flags generated from TrainConfig (nothing is trained)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from minimind_v import cli
from minimind_v.datatools.texts import iter_texts
from minimind_v.train.flags import FLAGS, MODEL_SHORTCUTS
from minimind_v.train.loop import TrainConfig

BASE = ["train", "--stage", "vlm-sft", "--data", "a.parquet", "--out", "run"]


def parse_train(*extra):
    return cli.build_parser().parse_args([*BASE, *extra])


def config(*extra) -> TrainConfig:
    from minimind_v.train.flags import config_from_args
    return config_from_args(parse_train(*extra))


def test_every_command_is_in_the_table_the_docstring_and_help():
    names = ["demo", "train", "eval", "chat", "serve", "tokenizer", "data", "convert", "export", "merge"]
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
            "export": ["export", "--model", "m", "--to", "hf", "out"], "merge": ["merge", "adapter", "out"]}
    assert set(argv) == set(cli.COMMANDS)
    for name, args in argv.items():
        a = p.parse_args(args)
        assert a.command == name and callable(a.func), name
    data = {"check": ["f.parquet"], "convert": ["captions", "dir", "--out", "o.parquet"],
            "preview": ["f.parquet", "--out", "g.png"], "stats": ["f.parquet"]}
    for sub, args in data.items():
        assert callable(p.parse_args(["data", sub, *args]).func), sub


def test_every_trainconfig_field_is_a_flag_with_help():
    p = cli.build_parser()
    train = p._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in FLAGS and FLAGS[f.name].help, f"TrainConfig.{f.name} has no help in train/flags.py"
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
            "--lora-targets", "attn", "--lora-projector", "freeze", "--no-progress", "--no-save-final", "--no-plot"]
    want = TrainConfig(stage="vlm-sft", data=["a.parquet"], out="run", init_from="prev/model", preset="minimind-3v",
                       model_overrides={"rope_theta": 10000.0, "hidden_act": "silu", "hidden_size": 64,
                                        "num_hidden_layers": 3, "use_moe": True},
                       tokenizer="tok", vision_encoder="enc", epochs=3, max_steps=7, batch_size=4, grad_accum=2,
                       lr=1e-3, min_lr=1e-5, warmup_steps=5, weight_decay=0.1, grad_clip=0.5, max_length=256,
                       padding="pack", trainable="llm", unfreeze_vision=True, dtype="fp32", device="cpu",
                       num_workers=2, seed=7, log_every=3, save_every=4, keep_last=5, resume="auto", logger="wandb",
                       max_bad_steps=9, trace_rows=True, encoder_cache="cache", augment=0.5, think_block=True,
                       control_tokens_in_text=True, lora_rank=8, lora_alpha=4.0, lora_dropout=0.1, lora_targets="attn",
                       lora_projector="freeze", progress=False, save_final=False, plot=False)
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
