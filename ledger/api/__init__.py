"""The HTTP face of the service (FastAPI). Never imports SQLAlchemy or the infrastructure layer."""
