"""Reading the node: line formats, file tailing, snapshots."""
