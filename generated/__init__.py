"""Generated kernel modules of lstmgen's built-in variants (regenerate: `lstmgen generate --gradient both`)."""
