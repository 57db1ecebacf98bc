"""Installs tfrs-attenmixer: `pip install -e .` (add `[test]` for the test suite)."""

import setuptools

setuptools.setup(
    name="tfrs-attenmixer",
    version="0.1.0",
    description=("Atten-Mixer (WSDM 2023) session-based recommendation as TensorFlow "
                 "Recommenders layers, with a distributed trainer and TF Serving export."),
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["tfrs_attenmixer*", "data*", "trainer*", "serving*"]),
    install_requires=[
        "tensorflow~=2.20.0",
        "tf-keras~=2.20.0",
        "tensorflow-recommenders==0.7.7",
        "scann[tf]==1.4.2",
        "tensorflow-serving-api~=2.20.0",
        "absl-py",
        "numpy",
        "tqdm",
        "pyarrow>=16",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "matplotlib"],
    },
)
