"""The pure core: entities, value objects, errors, ports and services. Standard library only."""
