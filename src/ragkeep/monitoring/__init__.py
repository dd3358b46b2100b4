"""What operators watch: searches per user and scope size, and (with the metrics issue) the rest."""
