"""What people read: the calibration report, the status page, the device inventory and
history, the open alerts, the co-location section. Each reads the store (or a finished
run) and renders; the rendering functions are pure, so they are tested without a terminal
or a browser where they can be."""
