//! Jira project and component leads: listing, handing over, and Jira's refusal to deactivate
//! or delete a lead.
