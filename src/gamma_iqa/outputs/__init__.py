"""The outputs layer: row writers with resume, the HTML report, plots and result tables. Builds on the engine."""
