"""Write the minimtl demo data set: minimtl/demo/{train,dev,test}.jsonl (shipped with the package).

This data was written for this project: every template and name list below was typed in here, and
nothing is copied from CoNLL, a news corpus or any other data set. The sentences are fictional: real
public figures, companies and places appear in made-up situations, next to invented people and firms.

Each line is one sentence, `{"tokens": [...], "tags": [...], "label": "sports"}`:
  * label: one of the six topics in TOPICS (sports, business, travel, technology, politics,
    entertainment); 200 train, 25 dev and 25 test sentences per topic;
  * tags: CoNLL-style BIO entity tags over PER, LOC, ORG and MISC (`B-PER`, `I-PER`, `O`, ...);
    an article in front of a name is outside it ("the United Nations" -> O B-ORG I-ORG);
  * tokens: split like CoNLL (punctuation and the possessive "'s" are tokens of their own,
    "n't" is split off as in the Penn Treebank, hyphenated words stay whole).

How it is made: each topic has ~35 hand-written templates (headlines, questions, chatty remarks, long
sentences with clauses, sentences with several entities, some with none). `[a|b|c]` in a template is a
choice of wording, `{day}`, `{num}`, ... are fillers that stay `O`, and `{pool}`, `{pool#2}`,
`{pool:last}`, ... are entity slots filled from the name pools. Names are drawn with Zipf-like weights:
pools list well-known names first, and as in news these are the frequent ones. Two kinds of hold-out
make dev and test harder:
  * templates: per topic 4 templates are used only in dev and 4 others only in test (30% of the
    dev/test sentences come from them, the rest are new sentences from train templates);
  * names: 30% of all names are never used in train; dev and test use them for a quarter of their
    slots, so about a third of dev/test entity mentions have a surface string that train never shows.
Everything is driven by one `random.Random(SEED)`, so the output is identical on every run, and every
example is validated before it is written (tag set, BIO order, lengths, no duplicates across splits).
`python tests/demo/check_demo.py` prints statistics and shallow baselines for the result.

Re-run (from the repository root):  python tests/demo/make_demo.py
"""

import json
import random
import re
from collections import Counter
from pathlib import Path

SEED = 20240607
OUT_DIR = Path(__file__).resolve().parents[2] / "minimtl" / "demo"
PER_TOPIC = {"train": 200, "dev": 25, "test": 25}  # sentences per topic in each split
HELDOUT_TEMPLATES = 4  # per topic: templates used only in dev, and as many others used only in test
HELDOUT_TEMPLATE_SHARE = 0.3  # share of dev/test sentences that come from their held-out templates
HELDOUT_NAME_SHARE = 0.3  # share of all names (drawn at random) that train never uses
UNSEEN_PICK_RATE = 0.24  # in dev/test: chance that a slot is filled with a held-out name
ZIPF_EXPONENT, ZIPF_OFFSET = 1.5, 2  # the i-th name of a pool (from 0) has weight 1 / (i + OFFSET)**EXPONENT
MIN_TOKENS, MAX_TOKENS = 5, 42

# Strings from the sentences used to show the model's predictions: the data must not contain them.
FORBIDDEN = ("Biden", "Musk", "Tesla", "Cybertruck", "Fetch")


def _names(text):
    """'a; b; c' -> ['a', 'b', 'c'] (pools are written as ;-separated lists to keep them compact)."""
    return [part.strip() for part in text.replace("\n", " ").split(";") if part.strip()]


# ---------------------------------------------------------------------------------------------------
# Entity pools: slot name -> (entity type, names). A leading lowercase "the " is tagged O (as in
# CoNLL: "the United Nations" -> O B-ORG I-ORG); templates therefore never write "the" before a slot.
# "Name@Other" pairs a name with an organisation: {exec:org} is the executive's company, {product:org}
# the product's maker.
# ---------------------------------------------------------------------------------------------------
POOLS = {
    # ---- PER ----
    "ath": ("PER", _names("""
        Lionel Messi; Serena Williams; LeBron James; Usain Bolt; Roger Federer; Naomi Osaka;
        Cristiano Ronaldo; Simone Biles; Rafael Nadal; Kylian Mbappé; Neymar; Virat Kohli;
        Eliud Kipchoge; Megan Rapinoe; Stephen Curry; Lewis Hamilton; Novak Djokovic; Shohei Ohtani;
        Erling Haaland; Coco Gauff; Mohamed Salah; Katie Ledecky; Max Verstappen; Iga Swiatek;
        Giannis Antetokounmpo; Sam Kerr; Mikaela Shiffrin; Carlos Alcaraz; Faith Kipyegon; Pelé;
        Marco Bellini; Tomasz Wronski; Aiko Tanaka; Daniel Okafor; Lucas Ferreira; Sofia Lindqvist;
        Jamal Pierce; Ravi Menon; Hana Novak; Diego Saldana; Emeka Obi; Chloe Marchand;
        Pieter de Vries; Kwame Mensah; Yusuf Demir; Elena Kostova; Mateo Ruiz; Freya Olsen;
        Tyler Brooks; Kenji Watanabe; Joaquín Herrera; Amani Wekesa; Bruno"""),
    ),
    "coach": ("PER", _names("""
        Pep Guardiola; Jürgen Klopp; Carlo Ancelotti; Steve Kerr; Sarina Wiegman; Zinedine Zidane;
        Didier Deschamps; Gareth Southgate; Emma Hayes; Mikel Arteta; Xabi Alonso; Luis Enrique;
        Erik Spoelstra; Eddie Jones; Frank Doyle; Stefan Richter; Marcelo Vieira; Kevin O'Hara;
        Tomás Aguirre; Dave Kowalczyk; Bruno Costa; Ian McAllister; Sven Lindahl; Gary Pritchard"""),
    ),
    "pol": ("PER", _names("""
        Angela Merkel; Emmanuel Macron; Justin Trudeau; Narendra Modi; Jacinda Ardern; Olaf Scholz;
        Rishi Sunak; Keir Starmer; Giorgia Meloni; Lula; Cyril Ramaphosa; Fumio Kishida; Pedro Sánchez;
        Ursula von der Leyen; Volodymyr Zelensky; Barack Obama; Nancy Pelosi; Kamala Harris;
        Boris Johnson; Antonio Guterres; Anthony Albanese; Claudia Sheinbaum; Mark Rutte;
        Mette Frederiksen; Jens Stoltenberg; Helena Varga; Tomas Reyes; Margaret Osei; Victor Langford;
        Amara Diallo; Henrik Dahl; Priya Raman; Samuel Achebe; Clara Hoffmann; Oliver Banks;
        Mariana Costa; Lena Petrov; Ahmed Karimi; David Whitfield; Rosa Delgado; Ingrid Solberg;
        Paul Mercer; Nadia Haddad; Jonas van Dijk; Teresa Okoro"""),
    ),
    "exec": ("PER", _names("""
        Tim Cook@Apple; Satya Nadella@Microsoft; Sundar Pichai@Google; Jensen Huang@Nvidia;
        Mary Barra@General Motors; Warren Buffett@Berkshire Hathaway; Andy Jassy@Amazon; Lisa Su@AMD;
        Jamie Dimon@JPMorgan Chase; Sam Altman@OpenAI; Mark Zuckerberg@Meta; Bernard Arnault@LVMH;
        Masayoshi Son@SoftBank; Daniel Ek@Spotify; Brian Chesky@Airbnb; Dara Khosrowshahi@Uber;
        Marc Benioff@Salesforce; Akio Toyoda@Toyota; Jane Fraser@Citigroup; Ola Källenius@Mercedes-Benz;
        Laura Kessler@Northwind Logistics; Martin Holt@Bluepeak Energy; Grace Nakamura@Veltrix Systems;
        Arjun Patel@Quantive Labs; Felix Brandt@Castellan Foods; Sophie Laurent@Solenne Cosmetics;
        Nathan Cole@Brightline Media; Isabel Moreno@Tidewater Shipping; Karim Aziz@Orbis Telecom;
        Eva Lindgren@Kestrel Robotics; Robert Tan@Greystone Capital; Julia Weiss@Pinecrest Insurance;
        Owen Gallagher@Copperfield Mining; Mei Lin@Nimbus Cloud; Thomas Berger@Arcadia Motors;
        Aisha Bello@Harbor & Finch; Lucas Moreau@Parcelo; Hannah Ruiz@Shopwise; Samir Haddad@Coinly;
        Yuki Sato@Redwood Analytics"""),
    ),
    "star": ("PER", _names("""
        Taylor Swift; Beyoncé; Adele; Tom Hanks; Meryl Streep; Bad Bunny; Shakira; Zendaya; Ed Sheeran;
        Lady Gaga; Denzel Washington; Greta Gerwig; Christopher Nolan; Bong Joon-ho; Rihanna; Drake;
        Billie Eilish; Harry Styles; Cate Blanchett; Penélope Cruz; Steven Spielberg; Dua Lipa;
        Keanu Reeves; Rosalía; Viola Davis; Mila Horvat; Camille Dubois; Leo Santos; Nina Castell;
        Ethan Blake; Yara Nasser; Oscar Lund; Tessa Quinn; Rafael Ortega; Maya Sinclair; Hugo Lambert;
        Iris Moreau; Dev Kapoor; Sunny Adeyemi; Marisol Vega; Ji-woo Han"""),
    ),
    "sci": ("PER", _names("""
        Geoffrey Hinton; Yann LeCun; Fei-Fei Li; Demis Hassabis; Andrew Ng; Jennifer Doudna;
        Tim Berners-Lee; Yoshua Bengio; Katalin Karikó; Timnit Gebru; Daphne Koller; Ingrid Halvorsen;
        Samuel Okoye; Marta Kowalska; Hiroshi Endo; Leila Farahani; Tobias Krüger; Ana Beltrán;
        Wei Zhang; Olumide Adeyemi; Claire Dubois; Rajesh Iyer"""),
    ),
    "local": ("PER", _names("""
        Anna Kowalski; Tom Fletcher; Priya Nair; Carlos Mendes; Mehmet Yilmaz; Julia Schneider;
        Sam Okonkwo; Lucy Harper; Ben Adler; Fatima Zahra; Kenji Mori; Olga Ivanova; Marta Silva;
        Noah Fischer; Zoe Campbell; Omar Farouk; Ines Duarte; Leila Ahmadi; Jack Morrison; Mia Rossi;
        Hugo Bernard; Elif Kaya; Rohan Mehta; Siobhan Kelly; Mateus Lima; Astrid Berg; Daniel Cohen;
        Grace Mwangi; Luca Romano; Chen Wei; Aoife Byrne; Tariq Hussain"""),
    ),
    "name": ("PER", _names("""
        Anna; Tom; Priya; Carlos; Mehmet; Julia; Sam; Lucy; Ben; Fatima; Kenji; Olga; Marta; Noah; Zoe;
        Omar; Ines; Leila; Jack; Mia; Hugo; Elif; Rohan; Siobhan; Mateus; Astrid; Daniel; Grace; Luca;
        Chen; Sophie; Ahmed; Nora; Pablo; Yuki; Aaron; Hannah; Ivan; Amira; Felix; Georgia; Jordan"""),
    ),
    # ---- LOC ----
    "city": ("LOC", _names("""
        Paris; London; Berlin; Tokyo; New York; Rio de Janeiro; Buenos Aires; Cape Town; Mumbai; Sydney;
        Toronto; Madrid; Rome; Cairo; Istanbul; Seoul; Nairobi; Lisbon; Amsterdam; Vienna; Prague;
        Bangkok; Mexico City; Los Angeles; San Francisco; Hong Kong; Singapore; Dubai; Chicago;
        Barcelona; Melbourne; Lagos; Stockholm; Oslo; Kyoto; Marrakech; Havana; Lima; Bogotá; Hanoi;
        Edinburgh; Dublin; Munich; Milan; Zurich; Geneva; Brussels; Warsaw; Athens; Montreal;
        Vancouver; Kuala Lumpur; Jakarta; Manila; Reykjavik; Salt Lake City; New Orleans;
        St. Petersburg; Santiago; Auckland; Dakar; Seville; Porto; Florence; Venice; Budapest; Krakow;
        Tallinn; Casablanca; Abu Dhabi; Doha; Shanghai; Beijing; Osaka; Delhi; Bangalore; Austin;
        Seattle; Boston; Washington; Accra; Addis Ababa; Valparaíso; Da Nang"""),
    ),
    "country": ("LOC", _names("""
        France; Germany; Japan; Brazil; India; Canada; Australia; Italy; Spain; Mexico; Kenya; Nigeria;
        Egypt; China; South Korea; South Africa; the United States; the U.S.; America; Britain;
        the United Kingdom; Argentina; Portugal; the Netherlands; Sweden; Norway; Poland; Turkey;
        Indonesia; Vietnam; Thailand; New Zealand; Chile; Peru; Colombia; Morocco; Ghana; Ireland;
        Greece; Switzerland; Austria; Belgium; Denmark; Finland; Iceland; Costa Rica; Saudi Arabia;
        the United Arab Emirates; the Czech Republic; Ukraine; the Philippines; Malaysia; Senegal;
        Ethiopia; Tanzania; Jordan; Georgia; Uruguay; Estonia; Sri Lanka; Bolivia"""),
    ),
    "area": ("LOC", _names("""
        Europe; Asia; Africa; Latin America; the Middle East; Scandinavia; Patagonia; Bavaria; Tuscany;
        California; Texas; Scotland; Catalonia; Silicon Valley; the Balkans; Siberia; Andalusia;
        Provence; Bali; Sicily; Crete; Hokkaido; Queensland; Ontario; Florida; Hawaii; Yorkshire;
        Southeast Asia; East Africa; Kerala; Lapland; Wales; Normandy; Sardinia; Yucatán; Quebec"""),
    ),
    "nature": ("LOC", _names("""
        the Alps; the Sahara; the Mediterranean; the Himalayas; the Caribbean; Lake Como;
        the Scottish Highlands; the Amalfi Coast; the Rocky Mountains; the Dolomites; the Atacama;
        the Pyrenees; the Serengeti; the Great Barrier Reef; the Black Forest"""),
    ),
    "landmark": ("LOC", _names("""
        the Eiffel Tower; the Colosseum; Machu Picchu; the Great Wall; the Sagrada Familia;
        Central Park; Times Square; the Golden Gate Bridge; the Acropolis; Angkor Wat; the Louvre;
        Table Mountain; Mount Fuji; the Taj Mahal; Niagara Falls; the Grand Canyon; Stonehenge;
        the Alhambra; Petra; Big Ben; the Brandenburg Gate; Victoria Falls; Mount Kilimanjaro;
        Uluru; the Blue Mosque; Chichén Itzá; Charles Bridge; the Matterhorn"""),
    ),
    # ---- ORG ----
    "company": ("ORG", _names("""
        Apple; Google; Microsoft; Amazon; Samsung; Toyota; Volkswagen; Siemens; Nestlé; Unilever; Shell;
        BP; Boeing; Airbus; Netflix; Spotify; Nvidia; Intel; IBM; Sony; Nintendo; Alibaba; Huawei;
        Meta; Coca-Cola; PepsiCo; Walmart; IKEA; Adidas; Nike; Pfizer; Novartis; Roche; Maersk;
        Philips; Uber; Airbnb; Unilever; Heineken; Danone; L'Oréal; Carrefour; Tata Motors; Infosys;
        Reliance Industries; Saudi Aramco; Glencore; Rio Tinto; Northwind Logistics; Bluepeak Energy;
        Castellan Foods; Solenne Cosmetics; Tidewater Shipping; Brightline Media; Copperfield Mining;
        Pinecrest Insurance; Harbor & Finch; Shopwise; Parcelo; Coinly; Arcadia Motors; Verdana Foods;
        Lakeshore Textiles; Ironclad Steel"""),
    ),
    "techco": ("ORG", _names("""
        Apple; Google; Microsoft; Samsung; Nvidia; Intel; IBM; Sony; Huawei; Meta; OpenAI; Alibaba;
        Tencent; Baidu; ASML; TSMC; Salesforce; Oracle; SAP; Nokia; Ericsson; Xiaomi; Lenovo; AMD;
        Dell; Anthropic; DeepMind; Veltrix Systems; Quantive Labs; Kestrel Robotics; Nimbus Cloud;
        Redwood Analytics; Orbis Telecom; Lumora; Tern Robotics; Fernwood Labs; Axiom Grid"""),
    ),
    "startup": ("ORG", _names("""
        Quantive Labs; Kestrel Robotics; Lumora; Tern Robotics; Fernwood Labs; Axiom Grid; Synthera;
        Bitfield; Mosaic Health; Corvid AI; Helio Storage; Pebblestone; Lattice Farms; Wavecrest;
        Driftwood Payments; Novamind; Coinly; Parcelo"""),
    ),
    "bankco": ("ORG", _names("""
        Goldman Sachs; JPMorgan Chase; HSBC; Deutsche Bank; BNP Paribas; Barclays; UBS; Morgan Stanley;
        Santander; Mizuho; Citigroup; ING; Nomura; Standard Chartered; Maple Ridge Bank;
        Greystone Capital; Harrow Partners"""),
    ),
    "carmaker": ("ORG", _names("""
        Toyota; Volkswagen; BMW; Renault; Ferrari; Hyundai; Ford; General Motors; Stellantis; BYD;
        Volvo; Nissan; Honda; Kia; Mercedes-Benz; Arcadia Motors; Tata Motors"""),
    ),
    "airline": ("ORG", _names("""
        Lufthansa; Ryanair; Emirates; Qantas; Delta Air Lines; Air France; KLM; easyJet;
        Singapore Airlines; Turkish Airlines; LATAM; Aer Lingus; Air India; Zephyr Airways;
        Iberia; Finnair; Kenya Airways"""),
    ),
    "planemaker": ("ORG", _names("Boeing; Airbus; Embraer; Bombardier; COMAC")),
    "team": ("ORG", _names("""
        Real Madrid; Barcelona; Manchester United; Liverpool; Bayern Munich; Juventus;
        Paris Saint-Germain; Chelsea; Arsenal; AC Milan; Inter Milan; Ajax; Benfica; Boca Juniors;
        Flamengo; the Los Angeles Lakers; the Golden State Warriors; the Boston Celtics;
        the New York Yankees; the Chicago Bulls; the Dallas Cowboys; the Kansas City Chiefs;
        the Toronto Maple Leafs; the Mumbai Indians; Borussia Dortmund; Atletico Madrid; Celtic;
        Galatasaray; Red Bull Racing; McLaren; Tottenham Hotspur; Napoli; the Seattle Sounders;
        Riverside Rovers; Northbridge United; the Harbor City Hawks; Valdora FC; Eastfield Athletic;
        the Kingsport Comets; Solano Suns; Westmoor Wanderers; the Granite Bay Bears; Port Alden Mariners"""),
    ),
    "sportbody": ("ORG", _names("""
        FIFA; UEFA; the International Olympic Committee; the IOC; World Athletics; the NBA; the NFL;
        the NHL; the ATP; the WTA; the Football Association; Cricket Australia; the All England Club;
        World Rugby; the Premier League"""),
    ),
    "agency": ("ORG", _names("""
        the United Nations; the UN; NATO; the European Union; the EU; the African Union; ASEAN;
        the Council of Europe; the Arab League; the World Health Organization; the Red Cross;
        Amnesty International; Greenpeace; Interpol; the G7; the G20; the OSCE; the European Commission;
        the Commonwealth; Doctors Without Borders"""),
    ),
    "econbody": ("ORG", _names("""
        OPEC; the IMF; the International Monetary Fund; the World Bank; the World Trade Organization;
        the WTO; the OECD; the International Energy Agency; the European Commission;
        the World Economic Forum; the Asian Development Bank"""),
    ),
    "cbank": ("ORG", _names("""
        the Federal Reserve; the Fed; the European Central Bank; the ECB; the Bank of England;
        the Bank of Japan; the Reserve Bank of India; the Swiss National Bank; the Bank of Canada;
        the Reserve Bank of Australia; the People's Bank of China"""),
    ),
    "regulator": ("ORG", _names("""
        the European Commission; the Federal Trade Commission; the FTC; Ofcom;
        the Competition and Markets Authority; the Federal Communications Commission;
        the Korea Fair Trade Commission; the Justice Department; the SEC; the Bundeskartellamt"""),
    ),
    "parliament": ("ORG", _names("""
        the Bundestag; the House of Commons; Congress; the U.S. Senate; the European Parliament;
        the Lok Sabha; the National Assembly; the Folketing; the Riksdag; the Sejm; the Storting;
        the House of Representatives"""),
    ),
    "party": ("ORG", _names("""
        the Democratic Party; the Republican Party; the Labour Party; the Conservative Party;
        the Green Party; the Social Democrats; the Christian Democratic Union; the Liberal Party;
        the Democrats; the Republicans; the Greens; the National Renewal Party; Civic Alliance;
        Progress Forum; the Union for Tomorrow; the Freedom and Justice League; the Left Bloc"""),
    ),
    "media": ("ORG", _names("""
        the Wall Street Journal; the BBC; Reuters; CNN; the New York Times; the Financial Times;
        Bloomberg; Al Jazeera; Le Monde; Der Spiegel; the Associated Press; the Guardian; NPR;
        Nikkei; El País; the Washington Post; the Daily Courier; the Metro Ledger;
        the Northern Herald; Deutsche Welle; the Economist; Variety; Rolling Stone"""),
    ),
    "uni": ("ORG", _names("""
        Harvard University; Harvard; Stanford University; Stanford; MIT; the University of Oxford;
        Oxford University; Cambridge University; ETH Zurich; the University of Tokyo; the Sorbonne;
        the Max Planck Institute; CERN; Johns Hopkins University; the University of Cape Town;
        Tsinghua University; Imperial College London; Yale; Princeton; Caltech;
        the Karolinska Institute; Westbrook University; the Halvorsen Institute;
        the University of Larkspur; Seoul National University; the University of Nairobi"""),
    ),
    "studio": ("ORG", _names("""
        Warner Bros.; Universal Pictures; Sony Pictures; Disney; Pixar; Paramount; Lionsgate; A24;
        Marvel Studios; Studio Ghibli; Universal Music; Sony Music; Live Nation; Neon; Focus Features;
        Bluefin Pictures; Northlight Films; Copper Kettle Records; Silverline Studios"""),
    ),
    "streamer": ("ORG", _names("""
        Netflix; HBO; Disney+; Prime Video; Apple TV+; Hulu; Paramount+; Spotify; YouTube;
        Crunchyroll; BBC iPlayer; Streamly"""),
    ),
    # ---- MISC ----
    "nat": ("MISC", _names("""
        German; French; British; American; Japanese; Brazilian; Italian; Spanish; Chinese; Indian;
        Canadian; Australian; Mexican; Kenyan; Nigerian; Egyptian; South African; South Korean;
        Swedish; Norwegian; Dutch; Polish; Turkish; Argentine; Portuguese; Irish; Greek; Swiss; Danish;
        Finnish; Ukrainian; Vietnamese; Thai; Moroccan; Ghanaian; Chilean; Colombian; Peruvian;
        Icelandic; Belgian; Austrian; Czech; Hungarian; Filipino; Indonesian; Saudi; Scottish; Welsh;
        Catalan; Senegalese; Ethiopian; Uruguayan; Estonian; Georgian"""),
    ),
    "regadj": ("MISC", _names("""
        European; African; Asian; Latin American; Scandinavian; Bavarian; Californian; Texan; Nordic;
        Baltic; Arab; Caribbean; Mediterranean; Andean"""),
    ),
    "lang": ("MISC", _names("""
        English; Spanish; French; German; Mandarin; Arabic; Hindi; Portuguese; Japanese; Swahili;
        Korean; Italian; Dutch; Turkish; Bengali; Polish; Greek; Vietnamese; Tagalog; Catalan; Yoruba;
        Tamil; Cantonese; Icelandic; Amharic; Welsh"""),
    ),
    "sportevent": ("MISC", _names("""
        the World Cup; the Olympics; the Olympic Games; the Champions League; the Super Bowl;
        Wimbledon; the U.S. Open; the Australian Open; the French Open; the Tour de France;
        the NBA Finals; the Stanley Cup; the Ryder Cup; the Copa America; the Six Nations;
        the Rugby World Cup; the Cricket World Cup; the Africa Cup of Nations; the Asian Games;
        the Commonwealth Games; the Monaco Grand Prix; the British Grand Prix; the Boston Marathon;
        the Berlin Marathon; the Giro d'Italia; the Europa League; the Euros; the Masters;
        the Women's World Cup; the Winter Olympics; the Paralympics"""),
    ),
    "product": ("MISC", _names("""
        iPhone 16@Apple; iPad Pro@Apple; MacBook Air@Apple; Apple Watch@Apple; AirPods@Apple;
        Vision Pro@Apple; Galaxy S24@Samsung; Galaxy Watch@Samsung; Pixel 9@Google; Android@Google;
        Chromebook@Google; Windows 11@Microsoft; Surface Pro@Microsoft; Xbox@Microsoft;
        ChatGPT@OpenAI; PlayStation 5@Sony; Nintendo Switch@Nintendo; Kindle@Amazon; Alexa@Amazon;
        Quest 3@Meta; ThinkPad@Lenovo; Mate 60@Huawei; GeForce RTX 4090@Nvidia; Copilot@Microsoft;
        Claude@Anthropic; Veltrix X2@Veltrix Systems; Lumora Glow@Lumora; Kestrel K9@Kestrel Robotics;
        Nimbus Drive@Nimbus Cloud; Orbis One@Orbis Telecom; Quantive Q1@Quantive Labs;
        Tern Mini@Tern Robotics; Linux; Firefox; Wikipedia; WhatsApp; Photoshop; Minecraft"""),
    ),
    "fest": ("MISC", _names("""
        the Oscars; the Grammys; the Golden Globes; the Emmys; the Cannes Film Festival; Cannes;
        Eurovision; the Eurovision Song Contest; Glastonbury; Coachella; the Venice Film Festival;
        the Berlin Film Festival; the Tony Awards; the BAFTAs; the Toronto International Film Festival;
        Sundance; the Brit Awards; Lollapalooza; the Latin Grammys; Fuji Rock"""),
    ),
    "film": ("MISC", _names("""
        Oppenheimer; Barbie; Dune; Inception; Parasite; Titanic; Amélie; Moonlight;
        Interstellar; Spirited Away; Everything Everywhere All at Once; The Silent Harbor;
        Glass Rivers; Midnight in Lagos; The Last Lighthouse; Paper Kingdoms; Northern Tide;
        Salt and Smoke; The Orchard Thief; Echoes of August"""),
    ),
    "album": ("MISC", _names("""
        Midnights; Lemonade; Future Nostalgia; Motomami;
        Un Verano Sin Ti; Harry's House; Blue Weekend; Neon Harbour; Paper Moons; Slow Fire;
        Velvet Static; Golden Hour Radio"""),
    ),
    "show": ("MISC", _names("""
        Succession; The Crown; Stranger Things; Squid Game; Fleabag; Money Heist; Shōgun;
        Severance; Ted Lasso; Breaking Bad; Harbour Lights; The Quiet Valley; Blackwater Road"""),
    ),
    "holiday": ("MISC", _names("""
        Christmas; Easter; Ramadan; Diwali; Lunar New Year; Carnival; Oktoberfest; Hanukkah;
        Thanksgiving; Eid; Holi; Songkran; Hogmanay; Mardi Gras"""),
    ),
}
# Slots that draw from several pools at once.
UNIONS = {
    "person": ("PER", ["ath", "coach", "pol", "exec", "star", "sci", "local"]),
    "place": ("LOC", ["city", "country", "area"]),
    "dest": ("LOC", ["area", "nature"]),
}
# Forms of a slot, {pool:form}: "last" is a person's surname, "org" the organisation after "@".
SURNAME_PARTICLES = {"von", "van", "der", "de", "da", "di", "del", "dos", "du", "le"}
SURNAME_OVERRIDES = {"Bong Joon-ho": "Bong", "Ji-woo Han": "Han", "Chen Wei": "Chen", "Wei Zhang": "Zhang"}

# ---------------------------------------------------------------------------------------------------
# Fillers: stay O. Each is a function of the random generator.
# ---------------------------------------------------------------------------------------------------
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def _big(rng):
    return f"{rng.choice([rng.randint(2, 99) * 100, rng.randint(10, 90) * 1000]):,}"


def _money(rng):
    amount = rng.choice([str(rng.randint(2, 950)), f"{rng.randint(1, 40)}.{rng.randint(1, 9)}"])
    return f"{rng.choice(['$', '$', '€', '£'])}{amount} {rng.choice(['million', 'billion', 'million'])}"


FILLERS = {
    "day": lambda rng: rng.choice(DAYS),
    "month": lambda rng: rng.choice(MONTHS),
    "year": lambda rng: str(rng.randint(1985, 2023)),
    "num": lambda rng: str(rng.randint(2, 12)),
    "num2": lambda rng: str(rng.randint(13, 60)),
    "age": lambda rng: str(rng.randint(29, 41)),
    "big": _big,
    "millions": lambda rng: rng.choice([f"{rng.randint(2, 40)} million", f"{rng.randint(11, 95)} million"]),
    "rate": lambda rng: rng.choice(["0.5", "1", "1.25", "2", "2.5", "3.75", "4", "4.25", "5", "5.5", "6.5"]),
    "score": lambda rng: f"{rng.randint(1, 5)}-{rng.randint(0, 3)}",
    "pct": lambda rng: rng.choice([str(rng.randint(2, 15)), f"{rng.randint(0, 9)}.{rng.randint(1, 9)}"]),
    "money": _money,
    "fee": lambda rng: f"{rng.choice(['$', '€', '£'])}{rng.randint(2, 15)}",
    "ordinal": lambda rng: rng.choice(["second", "third", "fourth", "fifth"]),
}

# ---------------------------------------------------------------------------------------------------
# Templates, per topic. [a|b] = choice of wording; {filler}; {pool}, {pool#2} (a second, different
# name), {pool:last}, {pool:org}. Never write "the {slot}" or "a {slot}": pools carry their own "the".
# ---------------------------------------------------------------------------------------------------
TEMPLATES = {
    "sports": [
        "{team} beat {team#2} {score} on {day} to [go top of the table|stay in the title race|reach the semi-finals].",
        "{ath} scored twice as {team} [thrashed|edged past|came from behind to beat] {team#2}.",
        "{nat} [striker|midfielder|defender|goalkeeper|winger] {ath} has signed a {num}-year contract with {team}.",
        "Can {country} finally win {sportevent} [this time|next summer|on home soil]?",
        "{ath} [ruled out for six weeks|doubtful for the derby|out of {sportevent}] with [knee|ankle|hamstring|shoulder] injury",
        "{team} sack coach {coach} after [poor start|fifth straight defeat|cup exit]",
        "Speaking to reporters in {city} on {day}, {team} manager {coach:last} said the squad was ready for {sportevent}.",
        "Who do you think wins {sportevent}, {ath:last} or {ath#2:last}?",
        "I watched {team} play last night and honestly the defence was [a mess|all over the place|asleep].",
        "{ath} won gold in the [100 metres|marathon|200 metres freestyle|long jump|giant slalom] at {sportevent}.",
        "The {nat} [team|squad] arrived in {city} on {day} ahead of their opening match against {country}.",
        "{country} held {country#2} to a goalless draw in {city}, a result that keeps both sides in contention for a place at {sportevent}.",
        "Tickets for {sportevent} final in {city} sold out within {num2} minutes, {sportbody} said.",
        "Record crowd of {big} watch {team} clinch [the title|promotion|the league]",
        "After {num} years at {team}, {ath:last} is leaving for {team#2} in a deal reportedly worth {money}.",
        "{sportbody} fined {team} {money} for [crowd trouble|breaching spending rules|fielding an ineligible player].",
        "It was a night to forget for {ath}, who [missed a penalty|was sent off|double-faulted on match point] as {team} [crashed out|lost] in {city}.",
        "{ath:last}'s late [goal|winner|header] gave {team} a {score} win over {team#2} on {day}.",
        "Has {ath:last} ever played better than [this season|this year|in the last few weeks]?",
        "{ath} retires at {age}",
        "Fans in {city} celebrated until dawn after {team} lifted the trophy for the first time since {year}.",
        "The referee [waved away|ignored|turned down] [two|three|four] penalty appeals in the [first|second] half, and the [home|away|travelling] fans [were furious|let him know about it|booed him off the pitch].",
        "What a [finish|game|comeback]! [Two goals in stoppage time|A last-lap overtake|A buzzer-beater from halfway|A try in the final minute] and the whole [stadium|arena|crowd] [went silent|erupted|was on its feet].",
        "The [coach|captain|manager|head coach] admitted the [team|players|side] had [defended poorly|lacked energy|been outplayed|given away too many chances] and promised a [reaction|better performance|response] [on {day}|in the next game|at home next week].",
        "{ath} and {ath#2} will meet in the final of {sportevent} on {day}.",
        "{team} confirmed on {day} that [striker|captain|goalkeeper] {ath} had undergone surgery in {city} and would miss the rest of the season.",
        "{nat} cyclist {ath} won the [opening stage|time trial|mountain stage] on {day} to take the overall lead.",
        "In a press conference that lasted barely {num} minutes, {coach} refused to talk about a new contract at {team} "
        "and said only that the players deserved better after a season that began with so much promise.",
        "{pol} congratulated {team} on winning {sportevent}, calling it a proud day for {country}.",
        "Breaking: {team} agree deal to sign {ath} from {team#2}",
        "Why does {team} keep losing away from home? [Genuine question.|Someone explain.|I don't get it.]",
        "{company} will sponsor {team}'s shirts from next season in a deal worth {money} a year.",
        "Unbelievable scenes, {ath:last} has done it again!",
        "Rain delayed play for [two|three] hours, but {ath:last} came back to win in straight sets.",
        "[Nobody|Hardly anyone] expected the [underdogs|newly promoted side|youngest team in the league] to reach the final, but here we are.",
        "Coach {coach:last} on {ath:last}: \"[He|She] is the best player I have ever worked with.\"",
    ],
    "business": [
        "Shares in {company} [rose|fell|jumped|slumped] {pct} percent on {day} after the company [raised|cut] its profit forecast.",
        "{company} to cut {big} jobs in {country}",
        "{exec:org} CEO {exec} said demand in {area} remained [weak|strong|resilient] during the {ordinal} quarter.",
        "{exec:last} steps down as chief executive of {exec:org}",
        "{company} agreed to buy {company#2} for {money} in a deal that still needs approval from regulators in {place}.",
        "{cbank} held interest rates at {rate} percent on {day}, saying inflation was still too high.",
        "{bankco} analysts expect {country}'s economy to grow by {pct} percent next year.",
        "{media} reported on {day} that {company} was in talks to [merge with|acquire|sell its stake in] {company#2}.",
        "{econbody} [cut|raised] its forecast for global growth, citing [weaker trade with|slowing demand in] {country}.",
        "Is it a good time to buy {company} stock, or should I wait until after the earnings report?",
        "{company} opens its first store in {city}",
        "Investors [cheered|shrugged off] the news, and the {nat} stock market closed {pct} percent higher on {day}.",
        "{exec}, who founded {exec:org} in a small office in {city} in {year}, is now worth an estimated {money}.",
        "Workers at {company}'s plant in {city} went on strike on {day} demanding higher wages.",
        "Inflation [eased|rose|edged up|slowed] for the {ordinal} month in a row, but [food and energy|rent and food|fuel and electricity] prices remain [stubbornly high|well above last year's levels|a worry for households].",
        "The [company|retailer|group|airline|bank] said [quarterly|annual|half-year] [profit|revenue|operating profit] [fell|rose] {pct} percent, [beating|missing|roughly matching] analyst [expectations|forecasts].",
        "Our small [bakery|bike shop|bookshop|coffee roastery] [doubled|grew] its revenue this year, mostly thanks to [online orders|a loyal local crowd|a new delivery app] and a new [wholesale contract|café on the corner|second shop].",
        "{company} shares hit record as [cloud|advertising|subscription|chip] sales soar",
        "According to {media}, {company} plans to raise {money} in a stock market listing in {city} later this year.",
        "{exec:last} told {media} that {exec:org} had no plans to leave {country} despite the new tax.",
        "The merger between {company} and {company#2} would create the largest [retailer|shipping group|food company] in {country}.",
        "{bankco} agreed to pay {money} to settle claims brought by investors in {country}.",
        "Why are {company} shares down {pct} percent this week?",
        "Although {company} has spent {money} on new factories in {country} and {country#2} over the past {num} years, "
        "chief executive {exec} admitted on {day} that supply problems would weigh on margins until at least the end of next year.",
        "{airline} orders {num2} planes from {planemaker} in deal worth {money}",
        "{carmaker} recalls {big} vehicles over [brake|software|airbag] fault",
        "The {nat} currency fell to a {num}-year low against the dollar on {day}.",
        "Small business owners in {city} say rents have [doubled|risen sharply] since {year}.",
        "Former {company} executive {local} launches rival startup in {city}",
        "{country} and {country#2} agreed to cut tariffs on [steel|cars|wine|rice], a move that {bankco} said could lift exports by {pct} percent.",
        "{exec:org}'s chief executive, {exec}, told investors on {day} that [costs|sales|orders] would [rise|fall] next quarter.",
        "Sales of electric cars [fell|rose] {pct} percent in {country} last month, {carmaker} said on {day}.",
        "Honestly, who still pays full price at {company} when everything goes on sale every [month|few weeks]?",
        "{regadj} markets [fell|rallied] on {day} as investors [worried about|bet on] [interest rates|oil prices|a trade deal].",
        "Oil prices climbed to their highest level since {year} after {econbody} warned of tight supplies.",
        "[Mortgage|Petrol|Grocery] prices are [rising|climbing] faster than wages, [economists|analysts|bankers] warned on {day}.",
        "{local}, an economist at {bankco}, said the housing market in {country} was finally cooling.",
    ],
    "travel": [
        "We spent {num} days in {city} and the food was [incredible|amazing|better than expected].",
        "Top {num} things to do in {city} this [summer|winter|autumn|spring]",
        "Is {dest} worth visiting in {month}, or is it too [hot|cold|crowded|rainy]?",
        "{airline} launches direct flights from {city} to {city#2}",
        "Travellers heading to {country} should check [visa rules|entry requirements] before booking, the {nat} embassy warned on {day}.",
        "My friend {name} recommended a tiny [guesthouse|hostel|family-run hotel] near {landmark}, and it was perfect.",
        "The queue for {landmark} was over {num} hours long, so we [gave up|went to a café instead|came back at sunrise].",
        "{city}'s new [metro line|airport terminal|tram network] opens on {day}, cutting journey times to the centre by half.",
        "Hiking in {dest}: [a beginner's guide|what to pack|the best trails]",
        "Does anyone know if you need to speak {lang} to get around {country}?",
        "From {city} we took the overnight train to {city#2}, then a ferry to {dest}.",
        "{city} tops list of the world's most [liveable|walkable|affordable] cities, ahead of {city#2} and {city#3}.",
        "Tourist numbers in {country} reached {millions} in {year}, the highest figure since {year}.",
        "{name} and {name#2}, a {nat} couple, have been cycling from {city} to {city#2} for {num} months and blogging about every stop.",
        "Cheap flights to {dest} in {month}? Here's what we found.",
        "[Pack light|Travel light|Bring a good raincoat], [book early|book trains in advance|avoid the peak season], and always carry a paper copy of your [hotel reservation|travel insurance|train tickets|passport].",
        "The [beach|old town|main square|harbour] was [quiet|nearly empty|peaceful] in the [morning|early morning], but by [noon|lunchtime|midday] you could barely [find a spot to lay a towel|walk without bumping into a tour group|hear yourself think].",
        "Our [flight|train|ferry] was delayed [six|eight|three|five] hours and nobody [at the gate|at the station|at the desk|from the company] could tell us why.",
        "{holiday} in {city} is magical, but hotel prices [triple|double] and the old town gets very crowded.",
        "Staff at {landmark} say visitor numbers have never been higher.",
        "{local}, travel editor at {media}, says {city} is the most underrated city in {area}.",
        "Rail strike in {country} disrupts holiday plans for thousands",
        "We rented a car in {city} and drove along the coast for {num} days.",
        "The {nat} government is introducing a tourist tax of {fee} per night from {month}.",
        "Visitors to {dest} can now buy a single pass for buses, trains and ferries.",
        "{city} or {city#2} for a long weekend in {month}? Can't decide.",
        "Backpacking through {dest} on a budget: {num} tips from a [seasoned|first-time] traveller",
        "After a {num}-hour journey from {city}, we landed in {city#2} just before midnight and went straight to bed.",
        "If you only have one day in {city}, start early at {landmark}, have lunch at one of the small {nat} restaurants by the river, "
        "and finish with a sunset walk through the old quarter.",
        "{airline} cancels hundreds of flights as storms hit {dest}",
        "Learning a few words of {lang} before the trip made a huge difference when we got lost outside {city}.",
        "[Honestly|Seriously], the best part of the [trip|holiday|whole week] was the [night train|street food|little ferry between the islands].",
        "I'm flying {airline} to {city} on {day}, any tips for getting from the airport to the centre?",
        "The view from {landmark} at sunset is worth every step of the climb.",
        "Hotels in {city} are fully booked for {holiday}, so locals are renting out spare rooms to tourists.",
        "Is it safe to drink tap water in {country}? [Asking for my trip next month.|We arrive on {day}.]",
    ],
    "technology": [
        "{exec:org} boss {exec:last} showed off the {product} to a packed hall in {city} on {day}.",
        "{product} review: [fast|beautiful|overpriced], but the battery [disappoints|impresses]",
        "Hackers stole data belonging to {big} customers of {techco}, the company said on {day}.",
        "How do I move my photos from {product} to {product#2} without losing them?",
        "{techco} is building a new data centre outside {city} to train its AI models.",
        "Researchers at {uni} built a robot that can [fold laundry|sort recycling|climb stairs] using only a cheap camera.",
        "{nat} startup {startup} raised {money} to build [batteries|chips|drones|translation software]",
        "{regulator} fined {techco} {money} over the way it handled user data.",
        "Is the {product} worth it, or should I wait for next year's model?",
        "{techco} [delays|scraps] launch of [smart glasses|foldable phone|self-driving taxi service]",
        "Software engineer {local} spent {num} years building a keyboard app for {lang} speakers that is now used by {millions} people.",
        "{techco} and {techco#2} announced a partnership on {day} to build chips in {country}.",
        "Update your {product} now: a security flaw lets attackers [read messages|take control of the camera|steal passwords].",
        "My [laptop|new laptop|old desktop] [fan sounds like a jet engine|gets painfully hot|freezes completely] every time I open more than [three|five|ten] browser tabs.",
        "The [new|latest|long-awaited] [update|patch|firmware release] finally fixes the bug that [drained the battery overnight|broke the Bluetooth connection|made the screen flicker|deleted saved passwords].",
        "Engineers say the [chip|processor|new battery cell] uses [half|a third of] the power of last year's design while [running|charging] [twice|three times] as fast.",
        "{sci}, a professor at {uni}, warned that AI systems still make basic mistakes in languages like {lang} and {lang#2}.",
        "{techco}'s app store rules face new scrutiny from {regadj} regulators",
        "At a trade show in {city}, {techco} showed a prototype [phone|laptop|headset] that folds in three.",
        "{product} sales beat expectations in {country}",
        "{techco} outage leaves millions unable to [send emails|log in|stream music] on {day}",
        "Which is better for programming, {product} or {product#2}?",
        "After months of rumours, {product:org} finally confirmed on {day} that the next {product} will ship with a custom chip "
        "designed in {city}, a move analysts at {bankco} say could save the company {money} a year.",
        "{sci} wins top science prize for work on [neural networks|the web|quantum computing|gene editing]",
        "The {nat} government wants every school to teach coding and basic AI skills by {year}.",
        "{exec} says {exec:org} will spend {money} on artificial intelligence next year",
        "Why does my {product} keep restarting after the latest update?",
        "{startup}, founded by two former {techco} engineers in {city}, has built a tool that writes software tests automatically.",
        "Self-driving taxis from {techco} began picking up passengers in {city} on {day}.",
        "The open-source community is [angry|divided] after {techco} changed the licence of one of its most popular projects.",
        "I switched from {product} to {product#2} last month and I'm not going back.",
        "{techco} [hires|poaches] {sci} from {uni} to lead its new research lab in {city}",
        "Scientists at {uni} and engineers from {techco} say their quantum computer solved the problem in {num} minutes.",
        "Most people never change the default password on their [home router|smart TV|baby monitor], security researchers [warn|say].",
        "Honestly, {startup} is [brilliant|so underrated|great] and its app is the most downloaded in {country} right now.",
        "Someone please explain why my phone needs {num2} gigabytes just to update itself.",
    ],
    "politics": [
        "President {pol:last} met {nat} Prime Minister {pol#2:last} in {city} on {day}.",
        "{party} wins [majority|most seats] in {country} election",
        "Thousands protest in {city} against new [pension|labour|immigration|tax] law",
        "{pol} said on {day} that {country} would reopen its embassy in {country#2} before the end of the year.",
        "Will {pol:last} run again in {year}?",
        "Foreign ministers from {country} and {country#2} gather in {city} for talks on [climate|trade|migration]",
        "{agency} Secretary-General {pol} urged both sides to return to the negotiating table.",
        "{parliament} voted {num2} to {num} to approve the budget on {day}.",
        "{pol:last}'s government survived a confidence vote by just {num} votes.",
        "Opposition leader {pol} accused the government of [ignoring|failing] voters in {area}.",
        "{media} poll puts {party} ahead by {num} points",
        "In a speech in {city}, {pol} promised to [cut taxes|build a million homes|fix the health service|reduce immigration] if {party} wins the election.",
        "Why does nobody talk about what {pol:last} actually did as [mayor|governor|finance minister]?",
        "Senator {pol} introduces bill to [ban|regulate] [short-term rentals|lobbying|cryptocurrency donations]",
        "{city} mayor {pol} announced free public transport for residents under {num2}.",
        "{country} recalls ambassador from {country#2} after [spying row|diplomatic dispute]",
        "{pol}, who served as {nat} foreign minister from {year} to 2015, has been appointed the new head of {agency}.",
        "{nat} voters head to the polls on {day} in an election seen as a test for {pol:last}.",
        "The new coalition agreement runs to more than {num2} pages but says almost nothing about [housing|pensions|climate policy|child care].",
        "Turnout was the lowest [in decades|since the war|in living memory], and [both main parties|the governing party|the two biggest parties] lost [seats|ground|votes] to [smaller rivals|independents|protest candidates].",
        "Honestly, I don't trust any of the candidates [this time|in this election|on the ballot], but I'll still [vote|go to the polls|vote on {day}].",
        "Chancellor {pol:last}'s coalition partners threatened to quit over the budget on {day}.",
        "Talks between {country} and {country#2} on a new border agreement ended without a deal in {city} late on {day}.",
        "{pol} resigns as {party} leader",
        "Prime Minister {pol:last} told {media} that {country} would [hold a referendum on the treaty|double its aid budget|not join the new trade bloc].",
        "Speaking at {agency} summit in {city}, {pol} warned that {area} faced its most difficult decade in a generation "
        "and called on {nat} and {regadj} leaders to agree a joint plan on energy and migration before the winter.",
        "{pol:last} to visit {country} next month, first trip by a {nat} leader in {num2} years",
        "Election officials in {area} said counting would continue until {day}.",
        "Who won the debate last night, {pol:last} or {pol#2:last}?",
        "{party} and {party#2} agreed to form a coalition government in {country} after {num} weeks of talks.",
        "Governor {pol:last} signed the [voting|housing|climate] bill into law on {day} despite protests outside the state capitol.",
        "Leaders of {agency} agreed on {day} to [impose new sanctions|send humanitarian aid|open accession talks], {pol} told reporters.",
        "The [minister|spokesman|party leader] refused to answer questions about the [leaked memo|missing funds|budget shortfall] and left the [press conference|briefing|interview] early.",
        "[Lawmakers|MPs|Senators] debated the bill for [nine|eleven|fourteen] hours before the vote was postponed [again|until next week].",
        "{pol} sworn in as {country}'s youngest ever leader",
        "{media} revealed that {party} received donations from {company} before the vote.",
    ],
    "entertainment": [
        "{star} wins best [lead performance|director|original song] at {fest}",
        "{star}'s new album {album} [topped the charts|debuted at number one] in {country}.",
        "{studio} confirmed that {film} will [open in cinemas|premiere] in {month}.",
        "Did anyone else think {film} was way too long?",
        "{star} and {star#2} to star in remake of {film}",
        "{star} announces {num2}-city world tour starting in {city}",
        "{film} earned {money} in its opening weekend, the best start for a {nat} film since {year}.",
        "{streamer} has renewed {show} for a {ordinal} season.",
        "{star} said the script for {film} was written during a long winter in {city}.",
        "Tickets for {star}'s concert in {city} sold out in {num} minutes.",
        "{fest} jury, led by {star}, awarded the top prize to a {nat} drama about [two sisters|a fishing village|a retired boxer].",
        "Who's going to {fest} this year? The lineup looks [unreal|amazing|kind of weak].",
        "Is {show} worth watching? Everyone at work keeps talking about it.",
        "{star} [sings|performs] in {lang} for the first time on new single",
        "The {nat} singer {star} broke the record for the most [streamed|watched] music video in a single day.",
        "The final episode was [a mess|a letdown|so rushed], and the writers clearly ran out of ideas halfway through the [season|series|show].",
        "We saw the [musical|new play|opera] [last night|on {day}], and the second act was even better than the first.",
        "The [soundtrack|cinematography|acting] is [beautiful|stunning|great], but honestly the [plot|ending|second half] made no sense.",
        "{star} cast as [villain|lead|narrator] in {studio}'s next [superhero film|animated feature|thriller]",
        "{film} wins big at {fest} with {num} awards, including best picture",
        "{show} star {star} on fame, family and growing up in {city}",
        "After {num} years away, {star} returns to the stage in {city} with a sold-out run of [shows|concerts].",
        "Despite mixed reviews from critics at {media}, {film} has become the surprise hit of the summer, earning more than {money} "
        "worldwide and turning its little-known {nat} lead actor {star} into a household name overnight.",
        "{star} reveals the story behind {album}",
        "Which {star:last} album should I start with, {album} or {album#2}?",
        "{star} will host {fest} this year, {media} reported.",
        "{star:last}'s performance at {fest} was the best thing I've seen all year.",
        "{film} director {star} says a sequel is [in the works|unlikely|already written].",
        "The {nat} film industry produced a record {num2} films last year.",
        "{streamer} pays {money} for the rights to the new {nat} drama from the makers of {show}",
        "My kids have watched {film} about {num2} times this month and I still cry at the ending.",
        "Fans waited outside the stadium in {city} for {num} hours before {star}'s show on {day}.",
        "{star} and {studio} part ways after disagreement over {film} sequel",
        "That concert was [loud|chaotic|magical] and I can't hear anything [today|this morning], no regrets.",
        "Reviewers called the new season of {show} the best television of the year.",
        "A documentary about {star} will premiere at {fest} before arriving on {streamer} in {month}.",
    ],
}
TOPICS = list(TEMPLATES)

ABBREVIATIONS = {"Dr.", "Mr.", "Mrs.", "Ms.", "St.", "vs.", "a.m.", "p.m.", "U.S.", "U.K.", "Jr.", "Inc.", "e.g."}
CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
LEADING = "(\"'$€£"
TRAILING = ".,!?;:)\"'"
CHOICE_RE = re.compile(r"\[([^\[\]]*)\]")
FILLER_RE = re.compile(r"\{(" + "|".join(FILLERS) + r")\}")
SLOT_RE = re.compile(r"\{(\w+)(?:#(\d+))?(?::(\w+))?\}")


def tokenize(text):
    """CoNLL-like split of template text: punctuation apart, clitics ('s, n't, ...) apart, hyphens kept."""
    tokens = []
    for chunk in text.split():
        lead, trail = [], []
        while chunk and chunk not in ABBREVIATIONS and chunk not in CLITICS and chunk[0] in LEADING:
            lead.append(chunk[0])
            chunk = chunk[1:]
        while chunk and chunk not in ABBREVIATIONS and chunk not in CLITICS and chunk[-1] in TRAILING:
            trail.insert(0, chunk[-1])
            chunk = chunk[:-1]
        clitic = []
        for c in CLITICS:
            if chunk.lower().endswith(c) and len(chunk) > len(c):
                clitic = [chunk[-len(c):]]
                chunk = chunk[:-len(c)]
                break
        tokens += lead + ([chunk] if chunk else []) + clitic + trail
    return tokens


def surname(name):
    if name in SURNAME_OVERRIDES:
        return SURNAME_OVERRIDES[name]
    words = name.split()
    for i, word in enumerate(words[1:], start=1):
        if word in SURNAME_PARTICLES:
            return " ".join(words[i:])
    return words[-1]


def entity_tokens(surface, etype):
    """'the United Nations', 'ORG' -> (['the', 'United', 'Nations'], ['O', 'B-ORG', 'I-ORG'])."""
    words = surface.split()
    tags = []
    for word in words:
        if not tags and word in ("the", "a", "an"):
            tags.append("O")  # an article in front of the name is not part of the entity
        else:
            tags.append(("I-" if tags and tags[-1] != "O" else "B-") + etype)
    return words, tags


class Pools:
    """Entity pools split into names that train may use and names kept for dev and test only."""

    def __init__(self, rng):
        every = sorted({entry.split("@")[0] for _, names in POOLS.values() for entry in names})
        rng.shuffle(every)
        held = set(every[: round(HELDOUT_NAME_SHARE * len(every))])
        # Pools list well-known names first; as in news, they are the frequent ones (see pick).
        rank = {}
        for _, names in POOLS.values():
            for i, entry in enumerate(names):
                rank.setdefault(entry.split("@")[0], i)
        self.seen, self.held = {}, {}
        for pool, (_, names) in POOLS.items():
            names = sorted(dict.fromkeys(names), key=lambda n: rank[n.split("@")[0]])
            self.seen[pool] = [n for n in names if n.split("@")[0] not in held]
            self.held[pool] = [n for n in names if n.split("@")[0] in held]
            if not self.seen[pool]:  # a tiny pool must still have something to train on
                self.seen[pool], self.held[pool] = self.held[pool][:1], self.held[pool][1:]
        for union, (_, members) in UNIONS.items():
            for part in (self.seen, self.held):
                merged = dict.fromkeys(n for m in members for n in part[m])  # a list in a fixed order
                part[union] = sorted(merged, key=lambda n: rank[n.split("@")[0]])

    def pick(self, rng, pool, split, needs_org, taken):
        def usable(names):
            return [n for n in names if n.split("@")[0] not in taken and (not needs_org or "@" in n)]

        seen, held = usable(self.seen[pool]), usable(self.held[pool])
        if split != "train" and held and rng.random() < UNSEEN_PICK_RATE:
            return rng.choice(held)  # a name train never uses
        # a seen name, drawn as names occur in news: a few of them often, most of them rarely
        return rng.choices(seen, weights=[1 / (i + ZIPF_OFFSET) ** ZIPF_EXPONENT for i in range(len(seen))])[0]


def entity_type(pool):
    return POOLS[pool][0] if pool in POOLS else UNIONS[pool][0]


def fill(template, rng, pools, split):
    """One sentence from a template: (tokens, tags)."""
    text = template
    while CHOICE_RE.search(text):
        text = CHOICE_RE.sub(lambda m: rng.choice(m.group(1).split("|")), text, count=1)
    text = FILLER_RE.sub(lambda m: FILLERS[m.group(1)](rng), text)
    tokens, tags, chosen, taken, pos = [], [], {}, set(), 0
    for m in SLOT_RE.finditer(text):
        words = tokenize(text[pos:m.start()])
        tokens += words
        tags += ["O"] * len(words)
        pool, index, form = m.group(1), m.group(2) or "1", m.group(3)
        if (pool, index) not in chosen:
            entry = pools.pick(rng, pool, split, form == "org", taken)
            chosen[pool, index] = entry
            taken.add(entry.split("@")[0])
        name, _, org = chosen[pool, index].partition("@")
        if form is None:
            words, etags = entity_tokens(name, entity_type(pool))
        elif form == "last":
            words, etags = entity_tokens(surname(name), entity_type(pool))
        elif form == "org":
            words, etags = entity_tokens(org, "ORG")
        else:
            raise ValueError(f"unknown slot form {form!r} in {template!r}")
        tokens += words
        tags += etags
        pos = m.end()
    words = tokenize(text[pos:])
    tokens += words
    tags += ["O"] * len(words)
    for i in range(len(tokens) - 1):  # "a Italian film" -> "an Italian film", "an 12-year" -> "a 12-year"
        if tokens[i].lower() in ("a", "an") and tags[i] == "O":
            vowel = tokens[i + 1][:1].lower() in "aeiou" and not tokens[i + 1].lower().startswith(("eu", "uk", "uni", "uru"))
            vowel = vowel or tokens[i + 1] in ("8", "11", "18") or tokens[i + 1].startswith(("8-", "11-", "18-"))
            tokens[i] = ("An" if tokens[i][0] == "A" else "an") if vowel else ("A" if tokens[i][0] == "A" else "a")
    if tags[0] == "O" and tokens[0][:1].islower():
        tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
    return tokens, tags


def check(example, where):
    """Raise if an example is malformed: the data is written valid, this only guards the templates."""
    tokens, tags = example["tokens"], example["tags"]
    if len(tokens) != len(tags) or not tokens:
        raise ValueError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
    if example["label"] not in TOPICS:
        raise ValueError(f"{where}: unknown label {example['label']!r}")
    previous = "O"
    for token, tag in zip(tokens, tags):
        if not token or any(ch.isspace() or ch in "{}[]|" for ch in token):
            raise ValueError(f"{where}: bad token {token!r}")
        if tag != "O":
            prefix, _, kind = tag.partition("-")
            if prefix not in ("B", "I") or kind not in ("PER", "LOC", "ORG", "MISC"):
                raise ValueError(f"{where}: bad tag {tag!r}")
            if prefix == "I" and previous[2:] != kind:
                raise ValueError(f"{where}: {tag} does not continue an entity of its type")
        previous = tag
    lowered = [t.lower() for t in tokens]
    for a, b in zip(lowered, lowered[1:]):
        if a in ("the", "a", "an") and b in ("the", "a", "an"):
            raise ValueError(f"{where}: doubled article in {' '.join(tokens)!r} (a template writes 'the' before a slot)")
    text = " ".join(tokens)
    for word in FORBIDDEN:
        if word in text:
            raise ValueError(f"{where}: contains {word!r}, which is kept for the prediction examples")
    if "Wall Street" in text and "Wall Street Journal" not in text:
        raise ValueError(f"{where}: contains 'Wall Street', which is kept for the prediction examples")


def split_templates(rng):
    """Per topic: {'train': [...], 'dev': [...], 'test': [...]} with dev and test having private templates."""
    plan = {}
    for topic in TOPICS:
        ids = list(range(len(TEMPLATES[topic])))
        rng.shuffle(ids)
        k = HELDOUT_TEMPLATES
        plan[topic] = {"dev": ids[:k], "test": ids[k: 2 * k], "train": ids[2 * k:]}
    return plan


def generate():
    rng = random.Random(SEED)
    pools = Pools(rng)
    plan = split_templates(rng)
    seen_sentences = set()
    splits = {}
    for split in ("train", "dev", "test"):
        examples = []
        for topic in TOPICS:
            n = PER_TOPIC[split]
            if split == "train":
                jobs = [("train", n)]
            else:
                private = round(HELDOUT_TEMPLATE_SHARE * n)
                jobs = [(split, private), ("train", n - private)]
            for source, count in jobs:
                ids = plan[topic][source][:]
                made, attempts = 0, 0
                while made < count:
                    if attempts % len(ids) == 0:
                        rng.shuffle(ids)  # cycle through the templates in a fresh order each round
                    template_id = ids[attempts % len(ids)]
                    attempts += 1
                    if attempts > 200 * count:
                        raise RuntimeError(f"cannot make {count} distinct {split}/{topic} sentences")
                    tokens, tags = fill(TEMPLATES[topic][template_id], rng, pools, split)
                    key = " ".join(tokens).lower()
                    if not MIN_TOKENS <= len(tokens) <= MAX_TOKENS or key in seen_sentences:
                        continue
                    seen_sentences.add(key)
                    example = {"tokens": tokens, "tags": tags, "label": topic}
                    check(example, f"{split}/{topic}/template {template_id}")
                    examples.append((example, f"{topic}:{template_id}"))
                    made += 1
        rng.shuffle(examples)
        splits[split] = examples
    return splits


def entity_chunks(tokens, tags):
    """[(type, surface)] of one sentence (the data is valid BIO, so a B- always starts a chunk)."""
    found = []
    for token, tag in zip(tokens, tags):
        if tag.startswith("B-"):
            found.append([tag[2:], [token]])
        elif tag.startswith("I-"):
            found[-1][1].append(token)
    return [(kind, " ".join(words)) for kind, words in found]


def report(splits):
    train_surfaces = {s for ex, _ in splits["train"] for _, s in entity_chunks(ex["tokens"], ex["tags"])}
    train_templates = {t for _, t in splits["train"]}
    for split, examples in splits.items():
        lengths = [len(ex["tokens"]) for ex, _ in examples]
        labels = Counter(ex["label"] for ex, _ in examples)
        chunk_list = [c for ex, _ in examples for c in entity_chunks(ex["tokens"], ex["tags"])]
        kinds = Counter(kind for kind, _ in chunk_list)
        templates = {t for _, t in examples}
        no_entity = sum(1 for ex, _ in examples if set(ex["tags"]) == {"O"})
        print(f"{split}: {len(examples)} sentences, {sum(lengths)} tokens, length {min(lengths)}-{max(lengths)} "
              f"(mean {sum(lengths) / len(lengths):.1f}), {no_entity} without entities")
        print(f"  topics:   {dict(sorted(labels.items()))}")
        print(f"  entities: {dict(sorted(kinds.items()))}, {len(chunk_list)} mentions, "
              f"{len({s for _, s in chunk_list})} distinct surfaces")
        print(f"  templates: {len(templates)} used, {len(templates - train_templates)} never used in train")
        if split != "train":
            unseen = sum(1 for _, s in chunk_list if s not in train_surfaces)
            print(f"  mentions whose surface never appears in train: {unseen}/{len(chunk_list)} "
                  f"({100 * unseen / len(chunk_list):.1f}%)")


def main():
    splits = generate()
    for split, examples in splits.items():
        path = OUT_DIR / f"{split}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for example, _ in examples:
                f.write(json.dumps(example, ensure_ascii=False, separators=(",", ":")) + "\n")
        print(f"wrote {path} ({len(examples)} sentences)")
    print(f"{sum(len(t) for t in TEMPLATES.values())} templates over {len(TOPICS)} topics: "
          + ", ".join(f"{t} {len(TEMPLATES[t])}" for t in TOPICS))
    report(splits)


if __name__ == "__main__":
    main()
