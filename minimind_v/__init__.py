"""minimind-v: train a tiny vision-language model from nothing, and use it.

Public API:
    ModelConfig, preset           model configuration and named presets (config.py)
    MiniMindVLM                   the model (model/vlm.py)
    load_model, save_model        load any supported folder / checkpoint; write a model folder (formats/)
    VLM                           load a folder and chat about pictures (pipeline.py)
    TrainConfig                   every training setting (train/config.py)

Training itself: `from minimind_v.train.loop import train` (`minimind_v.train` is the training package,
so the function is not offered at the top level, where the two names would clash).
"""
__version__ = "0.1.0"

from .config import ModelConfig, preset  # noqa: E402,F401


def __getattr__(name):   # lazy: importing the package stays cheap
    if name == "MiniMindVLM":
        from .model.vlm import MiniMindVLM
        return MiniMindVLM
    if name == "load_model":
        from .formats.load import load_model
        return load_model
    if name == "save_model":
        from .formats.folder import save_model
        return save_model
    if name == "VLM":
        from .pipeline import VLM
        return VLM
    if name == "TrainConfig":
        from .train.config import TrainConfig
        return TrainConfig
    raise AttributeError(name)
