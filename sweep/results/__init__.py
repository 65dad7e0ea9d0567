"""Reading a study: status table, dashboard, report, export, model card."""
