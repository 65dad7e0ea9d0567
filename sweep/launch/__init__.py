"""Starting trainers: cold processes, warm workers, GPU slots and capacity."""
