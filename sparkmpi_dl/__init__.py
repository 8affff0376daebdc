"""sparkmpi_dl."""
