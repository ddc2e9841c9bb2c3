"""quantum-file-sync: a folder as a real-time synchronised file service."""
