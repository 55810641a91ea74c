"""SAM2 as a Nuclio function for Label Studio and CVAT."""

__version__ = "0.1.0"
