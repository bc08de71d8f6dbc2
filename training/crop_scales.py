"""VideoMAE's multi-scale crop table, shared by the host sampler (natural.multi_scale_crop) and the
device one (device_pool.crop_grids); it imports nothing, so the device path needs no video readers."""

CROP_SCALES = (1.0, 0.875, 0.75, 0.66)      # crop sides as shares of the short side
MAX_DISTORT = 1                             # the two sides' scale indices differ by at most this
