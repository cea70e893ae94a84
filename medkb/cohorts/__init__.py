"""Research cohorts: Circe definitions counted in the database, attrition, small-cell suppression, feasibility."""
