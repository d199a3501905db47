"""Dataset registry: shape, class count and reference normalisation constants of every supported dataset."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """What the rest of the library needs to know about a dataset before loading it."""

    name: str
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...] | None  # None: computed from the train split at prepare time
    std: tuple[float, ...] | None
    min_class: int | None = None    # images in the train split's smallest class (None: known once prepared)
    train_size: int = 0             # images in the train and test splits (ImageNet subsets: at most), for the
    test_size: int = 0              # memory and time estimates made before the data is prepared (budget/)


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ImageNet-1k class indices of the 128 px subsets (MTT `utils.py:Config`); label k is the k-th index listed.
IMAGENET_SUBSETS: dict[str, tuple[int, ...]] = {
    "imagenette": (0, 217, 482, 491, 497, 566, 569, 571, 574, 701),
    "imagewoof": (193, 182, 258, 162, 155, 167, 159, 273, 207, 229),
    "imagemeow": (281, 282, 283, 284, 285, 291, 292, 290, 289, 287),
    "imagesquawk": (84, 130, 88, 144, 145, 22, 96, 9, 100, 89),
    "imagefruit": (953, 954, 949, 950, 951, 957, 952, 945, 943, 948),
    "imageyellow": (309, 986, 954, 951, 987, 779, 599, 291, 72, 11),
}

# Human-readable names of the subset classes, in label order.
IMAGENET_SUBSET_NAMES: dict[str, tuple[str, ...]] = {
    "imagenette": ("tench", "English springer", "cassette player", "chain saw", "church", "French horn",
                   "garbage truck", "gas pump", "golf ball", "parachute"),
    "imagewoof": ("Australian terrier", "Border terrier", "Samoyed", "beagle", "Shih-Tzu", "English foxhound",
                  "Rhodesian ridgeback", "dingo", "golden retriever", "Old English sheepdog"),
    "imagemeow": ("tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "lion", "tiger",
                  "jaguar", "snow leopard", "lynx"),
    "imagesquawk": ("peacock", "flamingo", "macaw", "pelican", "king penguin", "bald eagle", "toucan", "ostrich",
                    "black swan", "cockatoo"),
    "imagefruit": ("pineapple", "banana", "strawberry", "orange", "lemon", "pomegranate", "fig", "bell pepper",
                   "cucumber", "Granny Smith apple"),
    "imageyellow": ("bee", "yellow lady's slipper", "banana", "lemon", "corn", "school bus", "honeycomb", "lion",
                    "garden spider", "goldfinch"),
}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _specs() -> dict[str, DatasetSpec]:
    specs = [
        DatasetSpec("digits", 1, 8, 10, None, None, min_class=131, train_size=1347, test_size=450),  # our 75/25 split
        DatasetSpec("mnist", 1, 28, 10, (0.1307,), (0.3081,), min_class=5421, train_size=60000, test_size=10000),
        DatasetSpec("fashion-mnist", 1, 28, 10, (0.2861,), (0.3530,), min_class=6000, train_size=60000,
                    test_size=10000),
        DatasetSpec("cifar10", 3, 32, 10, CIFAR_MEAN, CIFAR_STD, min_class=5000, train_size=50000, test_size=10000),
        # CIFAR-10 statistics, as the reference
        DatasetSpec("cifar100", 3, 32, 100, CIFAR_MEAN, CIFAR_STD, min_class=500, train_size=50000, test_size=10000),
        DatasetSpec("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), min_class=4659,
                    train_size=73257, test_size=26032),
        DatasetSpec("tiny-imagenet", 3, 64, 200, IMAGENET_MEAN, IMAGENET_STD, min_class=500, train_size=100000,
                    test_size=10000),
        DatasetSpec("imagenet-64", 3, 64, 1000, IMAGENET_MEAN, IMAGENET_STD, train_size=1281167, test_size=50000),
    ]
    # ten ImageNet-1k classes: at most 1,300 train images each, 50 val images each
    specs += [DatasetSpec(name, 3, 128, len(ids), IMAGENET_MEAN, IMAGENET_STD, train_size=1300 * len(ids),
                          test_size=50 * len(ids)) for name, ids in IMAGENET_SUBSETS.items()]
    return {spec.name: spec for spec in specs}


DATASETS: dict[str, DatasetSpec] = _specs()


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name; an unknown name fails with the list of valid ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]
