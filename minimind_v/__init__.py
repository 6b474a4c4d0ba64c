"""minimind-v: train a tiny vision-language model from nothing, and use it.

Public API:
    ModelConfig, preset           model configuration and named presets (config.py)
    MiniMindVLM                   the model (model/vlm.py)
    load_model, save_model        model folders (model/folder.py)
    VLM                           load a folder and chat about pictures (pipeline.py)
    TrainConfig, train            one training loop for every stage (train/loop.py)
"""
__version__ = "0.1.0"

from .config import ModelConfig, preset  # noqa: E402,F401


def __getattr__(name):   # lazy: importing the package stays cheap
    if name == "MiniMindVLM":
        from .model.vlm import MiniMindVLM
        return MiniMindVLM
    if name in ("load_model", "save_model"):
        from .model import folder
        return getattr(folder, name)
    if name == "VLM":
        from .pipeline import VLM
        return VLM
    if name in ("TrainConfig", "train"):
        from .train import loop
        return getattr(loop, name)
    raise AttributeError(name)
