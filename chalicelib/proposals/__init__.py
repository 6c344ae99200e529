"""Proposals for leads: the price book's lines, server-computed totals, a status machine, the PDF."""
