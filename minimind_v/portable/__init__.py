"""Running a model where PyTorch is not: ONNX graphs, a torch-free runtime, and a folder for the browser.

    onnx_export.py   `minimind-v export --to onnx`: the vision graph (pixels -> visual tokens), the decoder
                     graph with a KV cache, the tokenizer and the settings beside them; fp16 / int8
    runtime.py       the torch-free runtime (numpy, onnxruntime, tokenizers, Pillow only): pixels, chat
                     template, greedy / sampled decoding with the cache, streaming; `chat/serve --runtime onnx`
    web.py, static/  `minimind-v export --to web`: the ONNX folder, a page and onnxruntime-web's files, served
                     by any static file server
"""
