"""Builds a backbone by name: ``"tada2d"`` (TAda2D) or ``"tsn"`` (the R2D / TSN baseline).

Both are ``backbone.tada2d.TAda2D``; the baseline switches TAdaConv and the temporal aggregation
off in every stage, so its state dict is TAda2D's minus the route functions and BN2.
"""

from backbone.tada2d import TAda2D

# name -> (TAdaConv in res2..res5, temporal aggregation)
BACKBONES: dict[str, tuple[tuple[bool, bool, bool, bool], bool]] = {
    "tada2d": ((True, True, True, True), True),
    "tsn": ((False, False, False, False), False),
}


def build_model(
    name: str,
    depth: int,
    heads: dict[str, int],
    width: int = 64,
    num_frames: int = 8,
    dropout: float = 0.5,
    route_reduction: int = 4,
    route_kernels: tuple[int, int] = (3, 3),
) -> TAda2D:
    """Returns a freshly initialised model.

    Args:
        name: ``"tada2d"`` or ``"tsn"``.
        depth: ResNet depth (18, 34, 50, 101).
        heads: head name -> number of classes.
        width: base width (64 for the real ResNet; small values for CPU-sized models).
        num_frames: frames per clip.
        dropout: dropout before the heads.
        route_reduction, route_kernels: route function settings (ignored by ``"tsn"``).
    """
    if name not in BACKBONES:
        raise ValueError(f"build_model: unknown backbone name {name!r}; choose one of {sorted(BACKBONES)}")
    tada_stages, temporal_aggregation = BACKBONES[name]
    return TAda2D(
        depth=depth,
        heads=heads,
        width=width,
        num_frames=num_frames,
        tada_stages=tada_stages,
        route_reduction=route_reduction,
        route_kernels=route_kernels,
        temporal_aggregation=temporal_aggregation,
        dropout=dropout,
    )
