"""Install atldas: ``pip install -c constraints-cpu.txt -e .[dev]`` (see the README)."""

from setuptools import find_packages, setup

setup(
    name="atldas",
    version="0.1.0",
    description="Hardware-aware differentiable architecture search with explicit topology learning "
                "(ATL-DAS) for image matting",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["atldas", "atldas.*", "search_spaces", "search_spaces.*",
                                    "derived_models", "derived_models.*"]),
    package_data={"derived_models": ["*.json"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4",  # fused Adam on the CPU (planted standalone training)
        "numpy>=1.23",
        "scipy>=1.9",
        "networkx>=3.0",
        "optuna>=3.4",
        "tensorboard>=2.12",
        "einops>=0.7",
        "Pillow>=9.0",
        "opencv-python-headless>=4.7",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "matplotlib>=3.6",
        "pymatting>=1.1",
    ],
    extras_require={
        "dev": ["pytest>=7"],
        "export": ["onnx", "onnxscript", "onnxruntime"],
    },
    entry_points={"console_scripts": ["atldas=atldas.cli:main_exit"]},
)
