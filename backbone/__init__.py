"""TAda2D backbone: TAdaConv2d, the route function, TAda2D / R2D (TSN) models and weight loading."""
