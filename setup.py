"""Installs tfrs-attenmixer: `pip install -e .` (add `[test]` for the test suite, `[beam]` for the
event-log import as an Apache Beam pipeline, `python -m data.prepare_beam`; `make install`
installs both)."""

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
        "test": ["pytest", "pytest-xdist", "hypothesis", "matplotlib"],
        # 2.78 resolves beside tensorflow 2.20 (protobuf < 7, pyarrow < 26); its [gcp] extra
        # adds the Dataflow runner's client libraries.
        "beam": ["apache-beam>=2.78,<2.79"],
    },
)
