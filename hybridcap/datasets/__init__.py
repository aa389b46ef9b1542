"""CIFAR-100 files, train/val/test splits, reference captions and the caption vocabulary."""

from hybridcap.datasets.captions import caption_names_class
from hybridcap.datasets.normalization import normalize_images
from hybridcap.datasets.prepare import OFFICIAL_MD5, OFFICIAL_URL, PreparationResult, default_data_root, prepare_cifar100
from hybridcap.datasets.prepared import ImageSplit, PreparedCifar100, load_prepared
from hybridcap.datasets.vocabulary import Vocabulary, tokenize

__all__ = [
    "OFFICIAL_MD5",
    "OFFICIAL_URL",
    "ImageSplit",
    "PreparationResult",
    "PreparedCifar100",
    "Vocabulary",
    "caption_names_class",
    "default_data_root",
    "load_prepared",
    "normalize_images",
    "prepare_cifar100",
    "tokenize",
]
