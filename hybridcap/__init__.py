"""hybridcap: caption CIFAR-100 images with a DCGAN encoder, a frozen CLIP text encoder and an LSTM decoder."""

__version__ = "0.1.0"
