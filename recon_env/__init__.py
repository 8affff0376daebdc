"""recon_env."""
