"""Video tracking on the image engine: SAM2's memory, one frame at a time, sessions server-side."""
