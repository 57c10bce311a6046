"""Recommendations: the pure computational core (no database, no GraphQL, no event store).

Everything here works on plain records — `Interaction`s and `Product`s — so that the same
code serves the projection that trains on events, the offline evaluation on a MovieLens
file and the tests on synthetic data with planted tastes. Modules, in the order data
flows through them:

- `catalogue`: the products a recommender may suggest, and their price bands.
- `interactions`: how typed signals (purchase, review, cart, wish-list, view) become
  implicit-feedback strengths, decayed by age.
- `synthetic`, `movielens`: where interactions come from offline.
- `split`: train/test splits (per-user stratified random, or temporal).
- `models`: popularity, collaborative (surprise), content and hybrid recommenders, each
  recommendation with a reason; the diversity re-ranker.
- `baskets`: "frequently bought together" — pairwise association rules (support,
  confidence, lift) mined from order baskets, and picks for a cart.
- `context`: popularity by tier and city, segment, festival and season, for cold-start
  and non-personalised lists, with the English reason for each pick.
- `metrics`, `evaluation`: offline metrics and the comparison against the baseline.
"""
