import re
from pathlib import Path

from setuptools import setup

version = re.search(r'__version__ = "([^"]+)"', Path("reid_augment/__init__.py").read_text()).group(1)

setup(
    name="reid-augment",
    version=version,
    description="Enlarge person re-ID training sets with pose-guided image generation (VDG).",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # The code's licence. The bundled sample data and the generator trained on it are research-use only (their
    # data sets' terms): see reid_augment/sample/README.md and the README's model card.
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    packages=["reid_augment", "reid_augment.integrations", "reid_augment.reid", "reid_augment.recipes"],
    package_dir={"reid_augment.recipes": "recipes"},
    package_data={"reid_augment": ["sample/*/*", "sample/*.md", "sample/*.png", "generators/*.safetensors"],
                  "reid_augment.recipes": ["*.yaml"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy>=1.24",
        "pandas>=2.0",
        "pillow>=10",
        "click>=8.1",
        "joblib>=1.3",
        "tqdm>=4.65",
        "pyyaml>=6",
        "scikit-image>=0.22",  # The field's SSIM protocol and body-mask rasterisation.
        "safetensors>=0.4",  # Shared generators: weights and metadata, no pickled code.
        "torch-fidelity==0.4.0",  # Obukhov et al.: the TF inception-2015-12-05 port the papers' IS/FID used.
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.100"],
        # torchreid's PyPI build imports these without declaring them; tensorboard 2.18+ needs protobuf 5,
        # which mediapipe (the offline pose backend) refuses.
        "torchreid": ["torchreid==0.2.5", "scipy", "opencv-python-headless", "gdown", "tensorboard<2.18"],
        # fastreid==1.4.0 itself is installed with --no-deps (it pins torch 1.13); what its data code imports:
        "fastreid": ["yacs", "tabulate", "termcolor"],
    },
    entry_points={"console_scripts": ["reid-augment=reid_augment.cli:main"]},
)
