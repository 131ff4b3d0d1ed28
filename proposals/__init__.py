"""BMN proposals: boundary-matching layer, model, label maps, losses, post-processing.

Module map (read in this order):

- ``bm_map``: the BM map's axis convention, valid cells, confidence channels (numpy only).
- ``bm_layer``: the boundary-matching sampling.
- ``bmn``: the Boundary-Matching Network.
- ``targets``: start/end/IoU-map training targets from ground-truth segments.
- ``losses``: TEM and PEM losses.
- ``inputs``: per-dataset inputs (HACS rescaling, EK100 sliding windows and fusion).
- ``postprocess``: candidate boundaries, proposal scores, Soft-NMS, seconds.
- ``dataset``: the BMN input sequences read from the feature store (rescaled videos or windows).
- ``infer``: inference, per-video fusion, chunked post-processing, AR/AUC, ``proposals.json``.
- ``train``: one training epoch, BMN checkpoints, the per-epoch metrics file.
- ``stage``: ``run_bmn(cfg, paths)``, the bmn stage of ``pipeline.py``.
"""
