"""Control-plane services: catalog rules (pools, deployments, runs) and background loops."""
