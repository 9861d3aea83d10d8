"""The run report: tables, plots and the student's model card."""
