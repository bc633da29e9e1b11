"""medtransfer: which pretrained backbone and transfer mode works best on your medical images."""

__version__ = "0.1.0"
