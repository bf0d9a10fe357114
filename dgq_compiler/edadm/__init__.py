"""EDA-DM (Liu et al.): calibration samples chosen by density and diversity in latent space (select.py,
calset.py) and fine-grained block reconstruction with learned weight rounding (reconstruct.py, adaround.py)."""
