"""Words, genres and places of the synthetic world.

Each topic has a vocabulary of English words that a sentence-embedding model places near
each other; neighbouring topics share a few words and every text also draws generic words,
so text carries topic signal imperfectly, as real titles and blurbs do. Item ``language``
is a label: the text itself is English in every language (documented in the README).
"""

from __future__ import annotations

# (topic, genre, words). Genres group topics, so genre is a coarser, noisier signal.
TOPICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("space", "Science", ("galaxy", "astronaut", "rocket", "planet", "orbit", "telescope", "nebula", "cosmos", "mars", "launch", "gravity", "stars", "universe", "moon")),
    ("crime", "True Crime", ("murder", "detective", "killer", "investigation", "evidence", "suspect", "homicide", "forensic", "victim", "case", "police", "trial", "mystery", "confession")),
    ("investing", "Business", ("stocks", "portfolio", "dividend", "investor", "market", "wealth", "bonds", "trading", "retirement", "savings", "fund", "money", "interest", "returns")),
    ("fitness", "Health", ("workout", "muscle", "running", "strength", "cardio", "training", "marathon", "gym", "endurance", "stretch", "athlete", "body", "sweat", "coach")),
    ("fantasy", "Fiction", ("dragon", "wizard", "kingdom", "sword", "magic", "quest", "elf", "sorcerer", "throne", "prophecy", "castle", "spell", "realm", "legend")),
    ("romance", "Fiction", ("love", "heart", "kiss", "wedding", "passion", "romance", "lovers", "desire", "bride", "affair", "sweetheart", "longing", "embrace", "darling")),
    ("war", "History", ("battle", "soldier", "army", "war", "invasion", "general", "trenches", "regiment", "front", "siege", "empire", "victory", "veterans", "history")),
    ("ancient", "History", ("pharaoh", "rome", "empire", "pyramids", "gladiator", "caesar", "athens", "temple", "dynasty", "archaeology", "ruins", "ancient", "history", "bronze")),
    ("cooking", "Lifestyle", ("recipe", "kitchen", "chef", "baking", "flavor", "dinner", "bread", "spices", "cuisine", "pasta", "dessert", "oven", "meal", "taste")),
    ("mindfulness", "Health", ("meditation", "calm", "breathing", "mindfulness", "peace", "anxiety", "stillness", "awareness", "gratitude", "sleep", "relax", "mind", "balance", "presence")),
    ("startups", "Business", ("founder", "startup", "venture", "pitch", "product", "growth", "entrepreneur", "funding", "scale", "company", "launch", "market", "innovation", "team")),
    ("comedy", "Comedy", ("jokes", "funny", "laugh", "comedian", "hilarious", "sketch", "standup", "humor", "banter", "prank", "satire", "silly", "giggles", "roast")),
    ("football", "Sports", ("football", "goal", "striker", "league", "match", "stadium", "penalty", "midfield", "transfer", "club", "referee", "season", "coach", "fans")),
    ("psychology", "Health", ("brain", "behavior", "emotions", "habits", "therapy", "mind", "cognitive", "personality", "trauma", "memory", "motivation", "psychology", "anxiety", "bias")),
    ("ai", "Science", ("algorithm", "robot", "neural", "machine", "data", "computer", "software", "intelligence", "automation", "code", "learning", "silicon", "chip", "network")),
    ("nature", "Science", ("forest", "wildlife", "ocean", "species", "climate", "animals", "evolution", "ecosystem", "birds", "rainforest", "whales", "biology", "planet", "river")),
    ("thriller", "Fiction", ("spy", "conspiracy", "chase", "agent", "betrayal", "secret", "assassin", "danger", "escape", "hostage", "cipher", "mission", "suspense", "mystery")),
    ("scifi", "Fiction", ("android", "starship", "future", "alien", "dystopia", "cyborg", "colony", "time", "galaxy", "robot", "portal", "clone", "planet", "empire")),
    ("politics", "News", ("election", "government", "president", "policy", "parliament", "vote", "campaign", "democracy", "senate", "debate", "minister", "law", "power", "nation")),
    ("music", "Culture", ("guitar", "album", "band", "concert", "song", "rock", "jazz", "singer", "melody", "rhythm", "vinyl", "tour", "drummer", "lyrics")),
    ("film", "Culture", ("movie", "director", "cinema", "actor", "hollywood", "screenplay", "film", "oscar", "scene", "premiere", "camera", "studio", "sequel", "review")),
    ("parenting", "Lifestyle", ("baby", "parents", "toddler", "children", "family", "mother", "father", "school", "bedtime", "teenager", "kids", "home", "nursery", "love")),
    ("travel", "Lifestyle", ("journey", "passport", "island", "backpacking", "flight", "adventure", "beach", "mountains", "hotel", "road", "explore", "abroad", "map", "culture")),
    ("leadership", "Business", ("leader", "manager", "strategy", "team", "vision", "negotiation", "influence", "career", "executive", "decisions", "culture", "company", "mentor", "habits")),
)

GENERIC_WORDS: tuple[str, ...] = (
    "story", "life", "world", "guide", "secrets", "inside", "new", "best", "daily", "show",
    "voices", "people", "journey", "truth", "hidden", "complete", "untold", "ultimate", "weekly",
    "real", "little", "great", "last", "first", "edition", "series", "talk", "conversations",
)

# (country, language, share of users). Users mostly speak their country's language.
COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("US", "en", 0.30), ("GB", "en", 0.12), ("DE", "de", 0.12), ("FR", "fr", 0.10),
    ("ES", "es", 0.08), ("MX", "es", 0.08), ("BR", "pt", 0.10), ("SE", "sv", 0.10),
)
LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "pt", "sv")
