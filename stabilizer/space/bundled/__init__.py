"""The bundled search spaces (YAML), shipped inside the package."""
