"""Auto-provisioning of what push pools need in the user's cloud (issue 8): the shared engine
(`base`) and one provisioner per cloud."""
