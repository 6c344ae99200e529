"""Privacy and retention jobs: export, deletion, purges, backups, restore (run by functions/)."""
