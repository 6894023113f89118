"""Templates for `skylane init --recipe NAME` (see `skylane.project_init`)."""
