"""Gendered word pairs for counterfactual data augmentation (`jaxlm.data.augment`).

Source: compiled for jaxlm after the gender pair lists of Lu et al. 2018 ("Gender Bias in
Neural Natural Language Processing", arXiv:1807.11714, which swaps "he/she, his/her,
man/woman, father/mother, ..." pairs) and Zhao et al. 2018 (WinoBias, "generalized_swaps"
and "extra_gendered_words", github.com/uclanlp/corefBias); not a verbatim copy of either.
Lower case; each pair is swapped both ways. `her` is ambiguous (his/him) and handled in
`augment.swap_gender`; `hers` maps to `his`. Plural forms are listed as their own pairs.
"""

PAIRS = (
    ("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"),
    ("father", "mother"), ("fathers", "mothers"), ("son", "daughter"), ("sons", "daughters"),
    ("brother", "sister"), ("brothers", "sisters"), ("husband", "wife"),
    ("husbands", "wives"), ("king", "queen"), ("kings", "queens"), ("prince", "princess"),
    ("princes", "princesses"), ("uncle", "aunt"), ("uncles", "aunts"), ("nephew", "niece"),
    ("nephews", "nieces"), ("grandfather", "grandmother"), ("grandfathers", "grandmothers"),
    ("grandson", "granddaughter"), ("grandsons", "granddaughters"), ("dad", "mom"),
    ("dads", "moms"), ("daddy", "mommy"), ("papa", "mama"), ("gentleman", "lady"),
    ("gentlemen", "ladies"), ("sir", "madam"), ("mr", "mrs"), ("lord", "lady"),
    ("male", "female"), ("males", "females"), ("masculine", "feminine"),
    ("boyfriend", "girlfriend"), ("boyfriends", "girlfriends"), ("groom", "bride"),
    ("grooms", "brides"), ("bridegroom", "bride"), ("fiance", "fiancee"),
    ("widower", "widow"), ("widowers", "widows"), ("stepfather", "stepmother"),
    ("stepson", "stepdaughter"), ("godfather", "godmother"), ("monk", "nun"),
    ("monks", "nuns"), ("actor", "actress"), ("actors", "actresses"), ("waiter", "waitress"),
    ("waiters", "waitresses"), ("hero", "heroine"), ("heroes", "heroines"),
    ("duke", "duchess"), ("dukes", "duchesses"), ("emperor", "empress"),
    ("baron", "baroness"), ("steward", "stewardess"), ("headmaster", "headmistress"),
    ("chairman", "chairwoman"), ("chairmen", "chairwomen"), ("businessman", "businesswoman"),
    ("businessmen", "businesswomen"), ("spokesman", "spokeswoman"),
    ("congressman", "congresswoman"), ("policeman", "policewoman"),
    ("policemen", "policewomen"), ("salesman", "saleswoman"), ("fireman", "firewoman"),
    ("sportsman", "sportswoman"), ("statesman", "stateswoman"), ("schoolboy", "schoolgirl"),
    ("fraternity", "sorority"), ("bachelor", "spinster"), ("patriarch", "matriarch"),
    ("gods", "goddesses"), ("god", "goddess"), ("lad", "lass"), ("lads", "lasses"),
    ("manhood", "womanhood"), ("brotherhood", "sisterhood"), ("paternal", "maternal"),
    ("paternity", "maternity"), ("fatherhood", "motherhood"), ("guy", "gal"), ("guys", "gals"),
)

# Optional (data.cda.names): frequent US first names, paired by rank (SSA lists of the 1990s).
NAME_PAIRS = (
    ("michael", "jessica"), ("christopher", "ashley"), ("matthew", "emily"),
    ("joshua", "sarah"), ("jacob", "samantha"), ("nicholas", "amanda"), ("andrew", "brittany"),
    ("daniel", "elizabeth"), ("tyler", "taylor"), ("joseph", "megan"), ("david", "hannah"),
    ("james", "mary"), ("john", "anna"), ("robert", "jennifer"), ("william", "emma"),
    ("thomas", "rachel"), ("ryan", "lauren"), ("brandon", "stephanie"), ("kevin", "nicole"),
    ("paul", "alice"),
)
