"""Images, DICOM, masks, metrics and settings: numpy / OpenCV / Pillow / pydicom only (no Qt, no torch)."""
