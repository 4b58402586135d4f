"""wall_client."""
