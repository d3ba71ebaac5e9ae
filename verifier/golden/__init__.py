"""Golden values: reference values for boot claims, how they are learned, compared,
diffed, and exchanged as signed CoRIM."""
