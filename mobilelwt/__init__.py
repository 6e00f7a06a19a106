"""mobilelwt: layer-wise training of efficient CNN students for mobile runtimes."""

__version__ = "0.1.0"
