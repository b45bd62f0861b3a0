"""The forkserver's last preload: everything its imports made moves to the collector's
permanent generation (`gc.freeze`), so a forked child's collections never walk those objects
and never copy their pages. The children then share them with the forkserver (their
proportional set size counts them once), instead of a copy each."""

import gc

gc.collect()  # garbage would be frozen with the rest
gc.freeze()
