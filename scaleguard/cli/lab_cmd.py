"""(in progress) commands of this verb register here on import."""
