"""reid-augment: enlarge person re-ID training sets with pose-guided image generation (VDG)."""

__version__ = "0.3.0"

# The verbs a Python user starts from. `train`, `generate` and `evaluate` share their module's name, so
# they are imported from their modules (from reid_augment.train import train).
_PUBLIC = {
    "estimate_poses": "estimate",
    "build_pairs": "pairs",
    "run_build_pairs": "pairs",
    "read_poses": "poses",
    "write_poses": "poses",
    "scan_images": "images",
    "load_recipe": "config",
    "run_demo": "demo",
    "load_generator": "weights",
    "bundled_generators": "weights",
}


def __getattr__(name: str):
    # Lazy re-exports keep `import reid_augment` (and `reid-augment --help`) free of torch start-up.
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", *_PUBLIC]
